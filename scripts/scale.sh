#!/usr/bin/env bash
# Does a full store slow registration down? Measures key-product registrations and broker logins (bench --auth:
# N new devices, their first logins, then the measured logins) on an empty store, fills the store to DEVICES
# devices (default 1,000,000) through the registration endpoint, measures again, and reports the change and the
# store's growth per device. See docs/performance.md ("Scale").
#
# Environment: DEVICES (default 1000000), N (requests per measured run, default 20000), C (concurrency, default
# 64), R (measured runs before and after, default 3), FILL_CHUNK (devices per fill run, default 100000),
# SCRATCH (build directory, default .build-bench), SKIP_BUILD=1, KEEP=1 (keep the data directory).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000000}
N=${N:-20000}
C=${C:-64}
R=${R:-3}
FILL_CHUNK=${FILL_CHUNK:-100000}
SCRATCH=${SCRATCH:-.build-bench}

. scripts/server-lib.sh
release_binary curl awk sed sqlite3

DATA=$(mktemp -d "${TMPDIR:-/tmp}/dynreg-scale.XXXXXX")
DB="$DATA/data/dynreg.sqlite"
cleanup() {
    stop_server
    if [[ "${KEEP:-0}" == 1 ]]; then echo "scale.sh: kept $DATA" >&2; else rm -rf "$DATA"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_server "$BIN"

read -r PRODUCT_ID DYNREG_PRODUCT_SECRET <<<"$(create_product scale key)"
[[ -n "${PRODUCT_ID:-}" && -n "${DYNREG_PRODUCT_SECRET:-}" ]] || { echo "scale.sh: could not create a product" >&2; exit 1; }
export DYNREG_PRODUCT_SECRET
registered() { curl -sf "$URL/admin/v1/products/$PRODUCT_ID" -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" |
    sed -n 's/.*"deviceCount":\([0-9]*\).*/\1/p'; }
# The database's size with its WAL folded in (a checkpoint from a second connection, as SQLite allows).
store_bytes() {
    sqlite3 "$DB" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null 2>&1 || true
    local total=0 f
    for f in "$DB" "$DB-wal"; do [[ -f "$f" ]] && total=$((total + $(stat -c %s "$f"))); done
    echo "$total"
}

# measure LABEL [BENCH_ARGS...]: R runs of N new devices (or N logins, with --auth); sets RATE and P99 to the medians.
measure() {
    local label=$1 rates="" p99s="" run report
    shift
    for run in $(seq 1 "$R"); do
        report=$("$BIN" bench --url "$URL" --product-id "$PRODUCT_ID" --devices "$N" --concurrency "$C" --json "$@" 2>/dev/null)
        [[ "$(successes "$report")" == "$N" ]] || echo "scale.sh: $label run $run: not every request succeeded: $report" >&2
        rates+="$(json_field requestsPerSecond "$report") "
        p99s+="$(json_field p99Ms "$report") "
        echo "scale.sh: $label run $run/$R: $(json_field requestsPerSecond "$report") req/s, p99 $(json_field p99Ms "$report") ms" >&2
    done
    RATE=$(median <<<"$rates")
    P99=$(median <<<"$p99s")
}

EMPTY_BYTES=$(store_bytes)
measure "empty store"
EMPTY_RATE=$RATE EMPTY_P99=$P99
measure "empty store, logins" --auth
EMPTY_AUTH_RATE=$RATE EMPTY_AUTH_P99=$P99

echo "scale.sh: filling the store to $DEVICES devices, $FILL_CHUNK per run" >&2
started=$(date +%s)
while :; do
    have=$(registered)
    (( have >= DEVICES )) && break
    chunk=$(( DEVICES - have < FILL_CHUNK ? DEVICES - have : FILL_CHUNK ))
    "$BIN" bench --url "$URL" --product-id "$PRODUCT_ID" --devices "$chunk" --concurrency "$C" --json >/dev/null 2>&1
    echo "scale.sh: $(registered) devices stored ($(( $(date +%s) - started )) s)" >&2
done
FULL_DEVICES=$(registered)
FULL_BYTES=$(store_bytes)
measure "$FULL_DEVICES devices"
FULL_RATE=$RATE FULL_P99=$P99
measure "$FULL_DEVICES devices, logins" --auth
FULL_AUTH_RATE=$RATE FULL_AUTH_P99=$P99

echo
echo "dynreg scale, $(date -u +%Y-%m-%d), $(nproc) CPUs, N=$N C=$C, medians of $R runs"
printf '%-44s %12s %9s\n' "scenario, store" "requests/s" "p99 ms"
printf '%-44s %12.0f %9.2f\n' "key registrations, empty" "$EMPTY_RATE" "$EMPTY_P99"
printf '%-44s %12.0f %9.2f\n' "key registrations, $FULL_DEVICES devices" "$FULL_RATE" "$FULL_P99"
printf '%-44s %12.0f %9.2f\n' "broker logins, empty" "$EMPTY_AUTH_RATE" "$EMPTY_AUTH_P99"
printf '%-44s %12.0f %9.2f\n' "broker logins, $FULL_DEVICES devices" "$FULL_AUTH_RATE" "$FULL_AUTH_P99"
change() {
    awk -v a="$2" -v b="$3" -v p="$4" -v q="$5" -v l="$1" \
        'BEGIN { printf "change, %s: throughput %+.1f %%, p99 %+.1f %%\n", l, (a / b - 1) * 100, (p / q - 1) * 100 }'
}
change "key registrations" "$FULL_RATE" "$EMPTY_RATE" "$FULL_P99" "$EMPTY_P99"
change "broker logins" "$FULL_AUTH_RATE" "$EMPTY_AUTH_RATE" "$FULL_AUTH_P99" "$EMPTY_AUTH_P99"
growth=$(( FULL_BYTES - EMPTY_BYTES ))
# Devices added between the two size readings: the fill and the empty-store measurement runs.
awk -v g="$growth" -v d="$FULL_DEVICES" \
    'BEGIN { printf "store growth: %.1f MiB for %d devices = %.0f bytes per device (device, replay entry, audit event, indexes)\n", g / 1048576, d, g / d }'
sqlite3 "$DB" "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC;" 2>/dev/null |
    awk -F'|' -v d="$FULL_DEVICES" '{ printf "  %-28s %8.1f MiB  %6.0f bytes per device\n", $1, $2 / 1048576, $2 / d }' || true
echo "server peak RSS (VmHWM): $(( $(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status") / 1024 )) MiB"
