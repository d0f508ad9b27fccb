#!/usr/bin/env bash
# New devices of one product on PostgreSQL across two instances: two `dynreg serve --database URL` on free ports
# of 127.0.0.1, one key product (auto-create on, a quota far above the load), and two `dynreg bench` load
# generators at once, one per instance. Prints each run's two rates and their sum, the outcomes, and where the
# CPU went meanwhile (from /proc: each instance, each generator, PostgreSQL's processes, the rest of the machine).
# See docs/performance.md, "PostgreSQL".
#
# Environment: DATABASE_URL (required: postgres://user:password@host:port/database?sslmode=disable, a database
# this may fill with devices: empty, or sealed under DYNREG_MASTER_KEY, which is random otherwise), N (new devices per generator and run, default 10000), C (concurrency per
# generator, default 32), R (runs, default 3), SCRATCH (build directory, default .build-bench), SKIP_BUILD=1,
# BIN (a built dynreg to use instead of building one), SERVER_BIN (a different dynreg binary to serve, e.g. main's
# build to compare against; the load generators stay BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
C=${C:-32}
R=${R:-3}
SCRATCH=${SCRATCH:-.build-bench}
: "${DATABASE_URL:?DATABASE_URL=postgres://user:password@host:port/database is required}"

. scripts/server-lib.sh
if [[ -n "${BIN:-}" ]]; then [[ -x "$BIN" ]] || { echo "bench-postgres.sh: $BIN is not executable" >&2; exit 1; }
else release_binary curl awk sed; fi
SERVER_BIN=${SERVER_BIN:-$BIN}

DATA=$(mktemp -d "${TMPDIR:-/tmp}/dynreg-bench-pg.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both instances share the database, so they share the admin token and the master key.
export DYNREG_ADMIN_TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
DYNREG_MASTER_KEY=${DYNREG_MASTER_KEY:-$(head -c 32 /dev/urandom | base64)}
export DYNREG_MASTER_KEY
export DYNREG_DATABASE=$DATABASE_URL
URLS=()
SERVER_PIDS=()
for instance in 1 2; do
    mkdir -p "$DATA/$instance"
    "$SERVER_BIN" serve --port 0 --no-demo --data-dir "$DATA/$instance" --address-rate-limit 0 \
        --product-rate-limit 0 >"$DATA/$instance/serve.out" 2>"$DATA/$instance/serve.err" &
    SERVER_PIDS+=($!)
    PIDS+=($!)
done
for instance in 1 2; do
    url=""
    for _ in $(seq 1 300); do
        url=$(sed -n 's/^dynreg listening on \(http:\/\/[^ ]*\).*/\1/p' "$DATA/$instance/serve.out")
        [[ -n "$url" ]] && break
        kill -0 "${SERVER_PIDS[$((instance - 1))]}" 2>/dev/null || {
            echo "bench-postgres.sh: instance $instance exited:" >&2
            cat "$DATA/$instance/serve.err" >&2
            exit 1
        }
        sleep 0.1
    done
    [[ -n "$url" ]] || { echo "bench-postgres.sh: instance $instance did not start within 30 s" >&2; exit 1; }
    URLS+=("$url")
done
URL=${URLS[0]}
read -r PRODUCT_ID PRODUCT_SECRET <<<"$(create_product bench-pg key '"autoCreate":true')"
[[ -n "${PRODUCT_ID:-}" && -n "${PRODUCT_SECRET:-}" ]] || { echo "bench-postgres.sh: no product" >&2; exit 1; }

# CPU ticks of every process now: "pid comm ticks" (utime + stime), and the machine's busy ticks.
snapshot() {
    for stat in /proc/[0-9]*/stat; do
        read -r line <"$stat" 2>/dev/null || continue
        local pid=${line%% *} rest=${line#*) }
        local comm=${line#*(}
        comm=${comm%%)*}
        # shellcheck disable=SC2086
        set -- $rest
        echo "$pid $comm $((${12} + ${13}))"
    done
    awk '/^cpu / { print "machine busy", $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

# cpu_report BEFORE AFTER SECONDS BENCH_PIDS: CPUs used per group over the interval.
cpu_report() {
    local hz
    hz=$(getconf CLK_TCK)
    awk -v hz="$hz" -v secs="$3" -v s1="${SERVER_PIDS[0]}" -v s2="${SERVER_PIDS[1]}" -v benches="$4" '
        BEGIN { split(benches, b, " "); for (i in b) bench[b[i]] = 1 }
        FNR == NR { before[$1] = $3; next }
        {
            d = $3 - ($1 in before ? before[$1] : 0)
            if ($1 == "machine") { machine = d; next }
            if ($1 == s1) g = "instance 1"; else if ($1 == s2) g = "instance 2"
            else if ($1 in bench) g = "generators"; else if ($2 == "postgres") g = "postgres"; else g = ""
            if (g != "") { used[g] += d; known += d }
        }
        END {
            printf "  CPUs:"
            n = split("instance 1,instance 2,generators,postgres", order, ",")
            for (i = 1; i <= n; i++) printf " %s %.2f,", order[i], used[order[i]] / hz / secs
            printf " everything else %.2f (of %d)\n", (machine - known) / hz / secs, '"$(nproc)"'
        }' "$1" "$2"
}

echo "two instances on $(printf '%s' "$DATABASE_URL" | sed 's#//[^@]*@#//#'), product $PRODUCT_ID;" \
    "$R runs of 2 x $N new devices at C=$C per generator"
for run in $(seq 1 "$R"); do
    snapshot >"$DATA/before"
    start=$(date +%s.%N)
    BENCH_PIDS=()
    for instance in 1 2; do
        DYNREG_PRODUCT_SECRET=$PRODUCT_SECRET "$BIN" bench --url "${URLS[$((instance - 1))]}" \
            --product-id "$PRODUCT_ID" --devices "$N" --concurrency "$C" --json \
            --device-prefix "r$run-i$instance" >"$DATA/bench$instance.json" &
        BENCH_PIDS+=($!)
    done
    # Halfway through, the CPU of the generators (they exit before the end snapshot).
    sleep 1
    snapshot >"$DATA/middle-before"
    middle_start=$(date +%s.%N)
    sleep 2
    snapshot >"$DATA/middle-after"
    middle_end=$(date +%s.%N)
    for pid in "${BENCH_PIDS[@]}"; do wait "$pid"; done
    end=$(date +%s.%N)
    total=0
    line="run $run:"
    for instance in 1 2; do
        report=$(cat "$DATA/bench$instance.json")
        rate=$(json_field requestsPerSecond "$report")
        total=$(awk -v a="$total" -v b="$rate" 'BEGIN { printf "%.0f", a + b }')
        line+=" instance $instance $(printf '%.0f' "$rate")/s (p99 $(json_field p99Ms "$report") ms, $(outcomes "$report")),"
    done
    echo "$line sum $total/s, wall $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
    cpu_report "$DATA/middle-before" "$DATA/middle-after" \
        "$(awk -v a="$middle_start" -v b="$middle_end" 'BEGIN { print b - a }')" "${BENCH_PIDS[*]}"
done
# The store's transactions over all runs: registrations and time per transaction.
for instance in 1 2; do
    curl -sf "${URLS[$((instance - 1))]}/metrics" -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" | awk -v i="$instance" '
        /^dynreg_store_commit_batch_size_sum/ { bs = $2 } /^dynreg_store_commit_batch_size_count/ { bc = $2 }
        /^dynreg_store_commit_duration_seconds_sum/ { ds = $2 } /^dynreg_store_commit_duration_seconds_count/ { dc = $2 }
        END { if (bc > 0 && dc > 0) printf "instance %d: %d transactions, %.1f registrations and %.1f ms each\n", i, bc, bs / bc, ds / dc * 1000 }'
done
count=$(curl -sf "$URL/admin/v1/products/$PRODUCT_ID" -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" |
    sed -n 's/.*"deviceCount":\([0-9]*\).*/\1/p')
echo "device count of $PRODUCT_ID: ${count:-?} (expected $((2 * N * R)))"
