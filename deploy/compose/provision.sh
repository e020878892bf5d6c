#!/usr/bin/env bash
# Provisions the compose network's secrets once: an ed25519 key per coordinator, operator and
# agent, the config key and the signed network configuration, the NATS users (an nkey per agent
# and coordinator), the API tokens, the database password (.env) and the coordinator's
# configuration with the config key filled in.
#
#   deploy/compose/provision.sh            # uses canton-ops from PATH
#   CANTON_OPS=target/release/canton-ops deploy/compose/provision.sh
#   SECRETS_DIR=/elsewhere deploy/compose/provision.sh
#
# Refuses to overwrite an existing network configuration (new keys would lock out running
# agents); remove the secrets directory to start over.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ops=${CANTON_OPS:-canton-ops}
secrets=${SECRETS_DIR:-$here/secrets}
env_file=${ENV_FILE:-$here/.env}

if [ -e "$secrets/network-config.bin" ]; then
    echo "provision: $secrets/network-config.bin exists; remove $secrets to provision again" >&2
    exit 1
fi
umask 077
mkdir -p "$secrets"

keys=(config-1 operator-coordinator-1 operator-operator-1)
for node in sequencer1 mediator1 participant1 participant2 participant3; do
    keys+=("agent-$node")
done
# The replicas' agents of the HA variant.
keys+=(agent-participant1-a agent-participant1-b)
for key in "${keys[@]}"; do
    "$ops" --output json keys gen --name "$key" --out-dir "$secrets" >/dev/null
done
cp "$here/keys/network.toml" "$secrets/network.toml"
"$ops" --output json keys network-config --input "$secrets/network.toml" \
    --out "$secrets/network-config.bin" >/dev/null
# The NATS server's users: one nkey per agent and per organisation's coordinator, each allowed
# only its own subjects (secrets/nats/accounts.conf for the server, seeds in secrets/nats/users).
"$ops" --output json gen nats-config --input "$secrets/network.toml" \
    --out-dir "$secrets/nats" >/dev/null

random_hex() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
random_hex >"$secrets/operator.token"
random_hex >"$secrets/read-only.token"
config_key=$(tr -d ' \n' <"$secrets/config-1.pub")
sed "s/REPLACE_CONFIG_PUBLIC_KEY/$config_key/" "$here/coordinator.toml" >"$secrets/coordinator.toml"
printf 'POSTGRES_PASSWORD=%s\nCONFIG_PUBLIC_KEY=%s\n' "$(random_hex)" "$config_key" >"$env_file"
echo "provision: keys, network configuration, NATS users and tokens in $secrets; database password in $env_file"
