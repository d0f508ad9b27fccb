#!/usr/bin/env bash
# Measures dynreg on this machine: the GET /livez ceiling (touches nothing) and GET /health, then key-product registrations on the current and the
# legacy endpoint, broker logins (POST /device/auth over N freshly registered devices), then certificate-product
# registrations (P-256 and RSA-2048 device keys, and CSRs) when the server can issue certificates. Every scenario
# runs R times, interleaved, and the table shows medians. See docs/performance.md.
#
# Environment: N (requests per run, default 20000), C (concurrency, default 64), R (runs, default 3),
# CERT_N (requests per certificate run, default N/10: certificates cost far more; RSA-2048 runs make CERT_N/10), THREADS (generator
# event-loop threads, default 1), SCRATCH (build directory, default .build-bench), SKIP_BUILD=1, SERVER_BIN (a
# different dynreg binary to serve, e.g. an older build to compare against; the load generator stays this one),
# ONLY (a space-separated subset of scenarios, e.g. ONLY="key legacy" against an older build without /livez),
# SERVE_ARGS (more options for the server, e.g. SERVE_ARGS="--login-cache-devices 0"),
# DATABASE_URL (serve from this PostgreSQL database instead of SQLite: an empty one, or one a run with the same
# DYNREG_MASTER_KEY left; without DYNREG_MASTER_KEY a fresh key is made, so the database must be empty),
# MEDIANS_OUT (a file to append "scenario requests/s p99-ms CPU-µs/req" lines to, one per scenario: scripts/compare.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
C=${C:-64}
R=${R:-3}
CERT_N=${CERT_N:-$((N / 10))}
THREADS=${THREADS:-1}
SCRATCH=${SCRATCH:-.build-bench}

. scripts/server-lib.sh
release_binary curl awk sed
SERVER_BIN=${SERVER_BIN:-$BIN}

DATA=$(mktemp -d "${TMPDIR:-/tmp}/dynreg-bench.XXXXXX")
cleanup() { stop_server; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start_server "$SERVER_BIN"

read -r KEY_ID KEY_SECRET <<<"$(create_product bench-key key)"
[[ -n "${KEY_ID:-}" && -n "${KEY_SECRET:-}" ]] || { echo "bench.sh: could not create a key product" >&2; exit 1; }

# bench SCENARIO DEVICES: runs one measurement, prints its JSON report.
bench() {
    local args=(bench --url "$URL" --devices "$2" --concurrency "$C" --threads "$THREADS" --json
        --server-pid "$SERVER_PID")
    case "$1" in
        livez) args+=(--livez) ;;
        health) args+=(--health) ;;
        key) args+=(--product-id "$KEY_ID") ;;
        legacy) args+=(--product-id "$KEY_ID" --legacy) ;;
        auth) args+=(--product-id "$KEY_ID" --auth) ;;
        cert) args+=(--product-id "$CERT_ID") ;;
        rsa) args+=(--product-id "$RSA_ID") ;;
        csr) args+=(--product-id "$CERT_ID" --csr) ;;
    esac
    local secret=$KEY_SECRET
    [[ "$1" == cert || "$1" == csr ]] && secret=$CERT_SECRET
    [[ "$1" == rsa ]] && secret=$RSA_SECRET
    DYNREG_PRODUCT_SECRET=$secret "$BIN" "${args[@]}"
}

SCENARIOS=(livez health key legacy auth)
NOTES=()
CERT_ID="" CERT_SECRET="" RSA_ID="" RSA_SECRET=""
read -r CERT_ID CERT_SECRET <<<"$(create_product bench-cert certificate)" || true
if [[ -z "${CERT_ID:-}" || -z "${CERT_SECRET:-}" ]]; then
    NOTES+=("certificate products: skipped, the server refused to create one")
else
    probe=$(bench cert 1 2>/dev/null || true)
    if [[ "$(successes "$probe")" == 1 ]]; then
        SCENARIOS+=(cert csr)
        read -r RSA_ID RSA_SECRET <<<"$(create_product bench-rsa certificate '"deviceKeyType":"rsa2048"')" || true
        [[ -n "${RSA_ID:-}" ]] && SCENARIOS+=(rsa)
    else
        NOTES+=("certificate products: skipped, a registration answered $(outcomes "$probe")")
    fi
fi

devices_for() {
    case "$1" in
        cert | csr) echo "$CERT_N" ;;
        rsa) echo $((CERT_N / 10 > 0 ? CERT_N / 10 : 1)) ;;
        *) echo "$N" ;;
    esac
}
label() {
    case "$1" in
        livez) echo "GET /livez (ceiling)" ;;
        health) echo "GET /health" ;;
        key) echo "POST /device/register, key" ;;
        legacy) echo "POST /register/dev (legacy), key" ;;
        auth) echo "POST /device/auth (broker logins)" ;;
        cert) echo "POST /device/register, certificate" ;;
        rsa) echo "POST /device/register, certificate, RSA" ;;
        csr) echo "POST /device/register, certificate, CSR" ;;
    esac
}

echo "bench.sh: server $URL (pid $SERVER_PID); N=$N C=$C R=$R; warming up" >&2
if [[ -n "${ONLY:-}" ]]; then
    read -r -a WANTED <<<"$ONLY"
    KEPT=()
    for scenario in "${WANTED[@]}"; do
        [[ " ${SCENARIOS[*]} " == *" $scenario "* ]] || { echo "bench.sh: ONLY names $scenario, which is not a scenario here (${SCENARIOS[*]})" >&2; exit 2; }
        KEPT+=("$scenario")
    done
    SCENARIOS=("${KEPT[@]}")
fi

for scenario in "${SCENARIOS[@]}"; do
    n=$(devices_for "$scenario")
    bench "$scenario" $((n / 10 > 0 ? n / 10 : 1)) >/dev/null 2>&1 || true
done

declare -A RATES P99S OKS CPUS
for run in $(seq 1 "$R"); do
    for scenario in "${SCENARIOS[@]}"; do
        echo "bench.sh: run $run/$R: $(label "$scenario")" >&2
        report=$(bench "$scenario" "$(devices_for "$scenario")")
        RATES[$scenario]+="$(json_field requestsPerSecond "$report") "
        P99S[$scenario]+="$(json_field p99Ms "$report") "
        OKS[$scenario]+="$(successes "$report") "
        CPUS[$scenario]+="$(json_field serverCPUMicrosPerRequest "$report") "
        if [[ "$(successes "$report")" != "$(devices_for "$scenario")" ]]; then
            NOTES+=("$(label "$scenario"), run $run: outcomes $(outcomes "$report")")
        fi
    done
done

sum() { tr ' ' '\n' | sed '/^$/d' | awk '{ s += $1 } END { print s + 0 }'; }

LIVEZ_RATE=$(median <<<"${RATES[livez]:-}")
HEALTH_RATE=$(median <<<"${RATES[health]:-}")
KEY_RATE=$(median <<<"${RATES[key]:-}")
echo
echo "dynreg bench, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), C=$C, medians of $R runs"
[[ "$SERVER_BIN" != "$BIN" ]] && echo "server binary: $SERVER_BIN"
printf '%-40s %7s %12s %9s %9s %10s %8s %11s %12s  %s\n' scenario requests "requests/s" "p99 ms" "vs livez" "vs health" "vs key" \
    "CPU µs/req" successes "runs (requests/s)"
for scenario in "${SCENARIOS[@]}"; do
    rate=$(median <<<"${RATES[$scenario]}")
    p99=$(median <<<"${P99S[$scenario]}")
    cpu=$(median <<<"${CPUS[$scenario]}")
    vslivez=$(awk -v a="$rate" -v b="$LIVEZ_RATE" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    ratio=$(awk -v a="$rate" -v b="$HEALTH_RATE" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    vskey=$(awk -v a="$rate" -v b="$KEY_RATE" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    [[ "$scenario" == health || "$scenario" == livez ]] && vskey="-"
    total=$(( $(devices_for "$scenario") * R ))
    printf '%-40s %7s %12.0f %9.2f %9s %10s %8s %11s %12s  %s\n' "$(label "$scenario")" "$(devices_for "$scenario")" \
        "$rate" "$p99" "$vslivez" "$ratio" "$vskey" "${cpu:--}" "$(sum <<<"${OKS[$scenario]}")/$total" "${RATES[$scenario]}"
    if [[ -n "${MEDIANS_OUT:-}" ]]; then echo "$scenario $rate $p99 ${cpu:-0}" >>"$MEDIANS_OUT"; fi
done
HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo "")
RSS=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo "")
if [[ -n "$HWM" ]]; then
    echo "server peak RSS (VmHWM): $((HWM / 1024)) MiB; RSS now: $((RSS / 1024)) MiB"
fi
for note in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $note"; done
