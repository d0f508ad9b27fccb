# Sourced by bench.sh and scale.sh: a throwaway dynreg server on a free port of 127.0.0.1.
#
# start_server BIN: serves a fresh data directory under $DATA (which the caller made), or the PostgreSQL database
# DATABASE_URL names, with a random admin token and broker token (exported as DYNREG_ADMIN_TOKEN and
# DYNREG_BROKER_TOKEN); sets URL and SERVER_PID. stop_server: stops it, also after Ctrl-C.

SERVER_PID=""

# release_binary TOOL...: checks the TOOLs are installed, builds the release dynreg into $SCRATCH unless
# SKIP_BUILD=1, and sets BIN to it.
release_binary() {
    local name tool
    name=$(basename "$0")
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$name: $tool is required (apt-get install $tool)" >&2; exit 1; }
    done
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        echo "$name: swift build -c release --scratch-path $SCRATCH" >&2
        swift build -c release --scratch-path "$SCRATCH" --product dynreg >&2
    fi
    BIN="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/dynreg"
    [[ -x "$BIN" ]] || { echo "$name: $BIN not found" >&2; exit 1; }
}

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        # A graceful stop can take a while (background services); do not hold the terminal for it.
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}

start_server() {
    local name
    name=$(basename "$0")
    export DYNREG_ADMIN_TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    export DYNREG_BROKER_TOKEN="broker-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    # The load comes from one address as fast as it can: lift the rate limits (a build without them has none).
    local limits=()
    # Not `serve --help | grep -q`: under pipefail, grep's early exit can kill serve with SIGPIPE and read as "no".
    local help
    help=$("$1" serve --help 2>/dev/null || true)
    if [[ "$help" == *--address-rate-limit* ]]; then
        limits=(--address-rate-limit 0 --product-rate-limit 0)
    fi
    # SERVE_ARGS: more options for serve, e.g. SERVE_ARGS="--login-cache-devices 0".
    local extra=()
    [[ -n "${SERVE_ARGS:-}" ]] && read -r -a extra <<<"$SERVE_ARGS"
    # DATABASE_URL: PostgreSQL instead of the data directory's SQLite, through the environment (no password in ps).
    local database=()
    if [[ -n "${DATABASE_URL:-}" ]]; then
        database=(env DYNREG_DATABASE="$DATABASE_URL")
        if [[ -z "${DYNREG_MASTER_KEY:-}" ]]; then
            DYNREG_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
            export DYNREG_MASTER_KEY
        fi
    fi
    "${database[@]+"${database[@]}"}" "$1" serve --port 0 --no-demo --data-dir "$DATA/data" "${limits[@]}" \
        "${extra[@]+"${extra[@]}"}" >"$DATA/serve.out" 2>"$DATA/serve.err" &
    SERVER_PID=$!
    URL=""
    for _ in $(seq 1 300); do
        URL=$(sed -n 's/^dynreg listening on \(http:\/\/[^ ]*\).*/\1/p' "$DATA/serve.out")
        [[ -n "$URL" ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "$name: the server exited:" >&2; cat "$DATA/serve.err" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n "$URL" ]] || { echo "$name: the server did not start within 30 s" >&2; exit 1; }
    case "$URL" in http://127.0.0.1:*) ;; *) echo "$name: unexpected server URL $URL" >&2; exit 1 ;; esac
}

# create_product NAME AUTH_TYPE [JSON_FIELDS]: prints "productId productSecret", or nothing when the server refuses.
create_product() {
    local body
    body=$(curl -sf -X POST "$URL/admin/v1/products" \
        -H "Authorization: Bearer $DYNREG_ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"$1\",\"authType\":\"$2\",\"deviceQuota\":1000000000${3:+,$3}}") || return 0
    printf '%s %s\n' \
        "$(printf '%s' "$body" | sed -n 's/.*"productId":"\([^"]*\)".*/\1/p')" \
        "$(printf '%s' "$body" | sed -n 's/.*"productSecret":"\([^"]*\)".*/\1/p')"
}

# From a `dynreg bench --json` report: json_field FIELD JSON (a number), successes JSON, outcomes JSON.
json_field() { printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
successes() { local s; s=$(printf '%s' "$1" | sed -n 's/.*"outcomes":{[^}]*"Success":\([0-9]*\).*/\1/p'); echo "${s:-0}"; }
outcomes() { printf '%s' "$1" | sed -n 's/.*"outcomes":\({[^}]*}\).*/\1/p'; }
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
