#!/usr/bin/env bash
# Compares two dynreg server binaries on this machine: scripts/bench.sh runs once on each, alternating, ROUNDS
# times, each run on a fresh store, and the table shows each scenario's median requests/s and server CPU per
# request for both, with the change. Alternating spreads the machine's drift over both builds. See
# docs/performance.md.
#
# Usage: scripts/compare.sh OLD_BINARY [NEW_BINARY]  (NEW_BINARY defaults to this checkout's release build)
# Environment: ROUNDS (default 5), ONLY (scenarios, default "key legacy"), and bench.sh's N, C, THREADS,
# SCRATCH, SKIP_BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?usage: scripts/compare.sh OLD_BINARY [NEW_BINARY]}
ROUNDS=${ROUNDS:-5}
export ONLY=${ONLY:-key legacy}
SCRATCH=${SCRATCH:-.build-bench}
export SCRATCH
[[ -x "$OLD" ]] || { echo "compare.sh: $OLD is not an executable" >&2; exit 2; }
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    swift build -c release --scratch-path "$SCRATCH" --product dynreg >&2
fi
NEW=${2:-$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/dynreg}
[[ -x "$NEW" ]] || { echo "compare.sh: $NEW is not an executable" >&2; exit 2; }

OUT=$(mktemp -d "${TMPDIR:-/tmp}/dynreg-compare.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
read -r -a SCENARIO_LIST <<<"$ONLY"

# One bench.sh run (R=1) of BINARY; appends its "scenario requests/s p99 cpu" lines to FILE.
run_one() {
    SKIP_BUILD=1 R=1 SERVER_BIN="$1" MEDIANS_OUT="$2" scripts/bench.sh >/dev/null 2>"$OUT/last.err" || {
        cat "$OUT/last.err" >&2
        exit 1
    }
}

for round in $(seq 1 "$ROUNDS"); do
    # Which build goes first alternates too.
    if ((round % 2)); then order=(old new); else order=(new old); fi
    for which in "${order[@]}"; do
        echo "compare.sh: round $round/$ROUNDS: $which" >&2
        if [[ "$which" == old ]]; then run_one "$OLD" "$OUT/old"; else run_one "$NEW" "$OUT/new"; fi
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
column_of() { awk -v s="$2" -v c="$3" '$1 == s { print $c }' "$1"; }

echo
echo "compare.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $ROUNDS alternating rounds, medians"
echo "old: $OLD"
echo "new: $NEW"
printf '%-8s %12s %12s %8s %14s %14s %8s  %s\n' scenario "old req/s" "new req/s" change "old CPU µs/req" \
    "new CPU µs/req" change "runs (old | new requests/s)"
for scenario in "${SCENARIO_LIST[@]}"; do
    old_rate=$(column_of "$OUT/old" "$scenario" 2 | median)
    new_rate=$(column_of "$OUT/new" "$scenario" 2 | median)
    old_cpu=$(column_of "$OUT/old" "$scenario" 4 | median)
    new_cpu=$(column_of "$OUT/new" "$scenario" 4 | median)
    printf '%-8s %12.0f %12.0f %7.1f%% %14s %14s %7.1f%%  %s | %s\n' "$scenario" "$old_rate" "$new_rate" \
        "$(awk -v a="$new_rate" -v b="$old_rate" 'BEGIN { print (b > 0 ? (a / b - 1) * 100 : 0) }')" \
        "$old_cpu" "$new_cpu" \
        "$(awk -v a="$new_cpu" -v b="$old_cpu" 'BEGIN { print (b > 0 ? (a / b - 1) * 100 : 0) }')" \
        "$(column_of "$OUT/old" "$scenario" 2 | tr '\n' ' ')" "$(column_of "$OUT/new" "$scenario" 2 | tr '\n' ' ')"
done
