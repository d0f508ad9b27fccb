#!/usr/bin/env bash
# How fast is the console's device page with DEVICES devices (default 1,000,000) in one product? Fills a fresh
# SQLite store through the console's own bulk form (1000 names a POST, as an operator pastes them), registers
# REGISTER of them with `dynreg register` and activates a third of those (so the status filter has a rare value
# to look for), then times the device page with a session cookie: the first page, prefix searches, the status
# filter and cursor pages, RUNS times each, and prints the plans SQLite chose for the page's queries. See
# docs/console.md ("Scale").
#
# Environment: DEVICES (default 1000000), REGISTER (default 300), RUNS (default 5), PARALLEL (fill POSTs at
# once, default 2), SCRATCH (release build directory, default .build-console-release), SKIP_BUILD=1, KEEP=1
# (keep the data directory).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000000}
REGISTER=${REGISTER:-300}
RUNS=${RUNS:-5}
PARALLEL=${PARALLEL:-2}
SCRATCH=${SCRATCH:-.build-console-release}

. scripts/server-lib.sh
release_binary curl awk sed sqlite3 xargs

DATA=$(mktemp -d "${TMPDIR:-/tmp}/dynreg-console-scale.XXXXXX")
DB="$DATA/data/dynreg.sqlite"
JAR="$DATA/cookies"
cleanup() {
    stop_server
    if [[ "${KEEP:-0}" == 1 ]]; then echo "console-scale.sh: kept $DATA" >&2; else rm -rf "$DATA"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_server "$BIN"
export URL DYNREG_ADMIN_TOKEN BIN JAR

read -r PRODUCT_ID PRODUCT_SECRET <<<"$(create_product console-scale key)"
[[ -n "${PRODUCT_ID:-}" ]] || { echo "console-scale.sh: could not create a product" >&2; exit 1; }
export PRODUCT_ID PRODUCT_SECRET

# Sign in as a browser does: the sign-in form's CSRF pair, then the session cookie and the session's CSRF token.
form_token() { sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1; }
SIGN_IN_TOKEN=$(curl -sf -c "$JAR" "$URL/console/sign-in" | form_token)
curl -sf -b "$JAR" -c "$JAR" -o /dev/null -X POST "$URL/console/sign-in" \
    --data-urlencode "csrf=$SIGN_IN_TOKEN" --data-urlencode "token=$DYNREG_ADMIN_TOKEN"
CSRF=$(curl -sf -b "$JAR" "$URL/console/products" | form_token)
[[ -n "$CSRF" ]] || { echo "console-scale.sh: could not sign in to the console" >&2; exit 1; }
export CSRF

# fill_chunk FIRST: POSTs names dev-FIRST … dev-(FIRST+999) to the console's bulk form.
fill_chunk() {
    local first=$1 last=$(($1 + 999)) body
    body="csrf=$CSRF&names=$(printf 'dev-%07d%%0A' $(seq "$first" "$last"))"
    curl -sf -b "$JAR" -o /dev/null -X POST "$URL/console/products/$PRODUCT_ID/devices" \
        -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$body"
}
export -f fill_chunk
count() { curl -sf "$URL/admin/v1/products/$PRODUCT_ID" -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" |
    sed -n 's/.*"deviceCount":\([0-9]*\).*/\1/p'; }

echo "console-scale.sh: creating $DEVICES devices through the console's bulk form, $PARALLEL POSTs at once" >&2
started=$(date +%s)
step=100000
for ((base = 0; base < DEVICES; base += step)); do
    top=$((base + step < DEVICES ? base + step : DEVICES))
    seq "$base" 1000 $((top - 1)) | xargs -P "$PARALLEL" -I{} bash -c 'fill_chunk {}'
    echo "console-scale.sh: $(count) devices ($(($(date +%s) - started)) s)" >&2
done
FILL_SECONDS=$(($(date +%s) - started))

# Spread over the names: every (DEVICES / REGISTER)-th device registers; every third of those is activated.
echo "console-scale.sh: registering $REGISTER devices with dynreg register, activating a third" >&2
stride=$((DEVICES / REGISTER))
for ((i = 0; i < REGISTER; i++)); do printf 'dev-%07d\n' $((i * stride + 7)); done >"$DATA/registered"
xargs -P "$PARALLEL" -I{} "$BIN" register --url "$URL" --product-id "$PRODUCT_ID" --device-name {} \
    --product-secret "$PRODUCT_SECRET" >/dev/null 2>"$DATA/register.err" <"$DATA/registered"
awk 'NR % 3 == 1' "$DATA/registered" | xargs -P "$PARALLEL" -I{} curl -sf -o /dev/null -X POST \
    -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" "$URL/admin/v1/products/$PRODUCT_ID/devices/{}/activate"

page() { curl -s -o "$DATA/page.html" -b "$JAR" -w '%{http_code} %{time_total}\n' "$URL/console/products/$PRODUCT_ID/devices$1"; }
rows() { grep -o 'href="/console/products/[^"]*/devices/dev-[0-9]*"' "$DATA/page.html" | wc -l; }

echo
echo "dynreg console device page, $(count) devices in one product, $(date -u +%Y-%m-%d), $(nproc) CPUs, filled in $FILL_SECONDS s"
printf '%-44s %5s %8s %8s %8s\n' "request" rows "min ms" "median" "max ms"
measure() {
    local label=$1 query=$2 times="" run answer
    for run in $(seq 1 "$RUNS"); do
        answer=$(page "$query")
        [[ "${answer%% *}" == 200 ]] || echo "console-scale.sh: $label answered ${answer%% *}" >&2
        times+="$(awk -v t="${answer#* }" 'BEGIN { printf "%.2f", t * 1000 }') "
    done
    local sorted
    sorted=$(tr ' ' '\n' <<<"$times" | sed '/^$/d' | sort -g)
    printf '%-44s %5s %8s %8s %8s\n' "$label" "$(rows)" "$(head -1 <<<"$sorted")" "$(median <<<"$times")" \
        "$(tail -1 <<<"$sorted")"
}
measure "first page" ""
measure "prefix dev-05000 (100 match)" "?prefix=dev-05000"
measure "prefix dev-0999999 (1 match)" "?prefix=dev-0999999"
measure "prefix nomatch" "?prefix=nomatch"
measure "status created" "?status=created"
measure "status registered ($((REGISTER - (REGISTER + 2) / 3)) devices)" "?status=registered"
measure "status activated ($(((REGISTER + 2) / 3)) devices)" "?status=activated"
measure "cursor after dev-0500000" "?after=dev-0500000"
measure "cursor after dev-0999900" "?after=dev-0999900"
measure "status registered, after dev-0500000" "?status=registered&after=dev-0500000"

echo
echo "SQLite's plans for the page's queries (the store's SQL, with this product):"
plan() { echo "  $1"; sqlite3 "$DB" "EXPLAIN QUERY PLAN $1" | sed 's/^/    /'; }
plan "SELECT * FROM devices WHERE product_id = '$PRODUCT_ID' AND name > 'dev-05000' ORDER BY name LIMIT 50"
plan "SELECT * FROM devices WHERE product_id = '$PRODUCT_ID' AND status = 'registered' ORDER BY name LIMIT 50"
plan "SELECT * FROM devices WHERE product_id = '$PRODUCT_ID' AND name = 'dev-05000'"
echo "store: $(( $(stat -c %s "$DB") / 1048576 )) MiB (+ WAL $(( $(stat -c %s "$DB-wal" 2>/dev/null || echo 0) / 1048576 )) MiB)"
