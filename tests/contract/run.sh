#!/usr/bin/env bash
# Palisade API-contract harness: proves that clients generated from the live OpenAPI
# document work against a live server, and that schemathesis finds no failures.
#
#   tests/contract/run.sh [--server-bin PATH] [--spec FILE] [--only STEPS] [--skip STEPS]
#                         [--fail-fast] [--py-warnings-fatal] [--st-max-examples N]
#                         [--st-phases LIST] [--st-workers N] [--st-max-time S] [--st-seed N]
#                         [--keep]
#
# Steps (names for --only/--skip):
#   validate          openapi-generator `validate` of the spec
#   python            openapi-python-client: generate, count (and print) its warnings
#   typescript-fetch  openapi-generator typescript-fetch: generate, `tsc --strict`
#   openapi-fetch     openapi-typescript types + openapi-fetch: generate, `tsc --strict`
#   rust              openapi-generator rust: generate, `cargo check`
#   tour-python       the README tour through the generated Python client
#   tour-ts           the README tour through the TypeScript client (openapi-fetch)
#   schemathesis      every operation, all checks, all phases (incl. stateful), two tenants
#
# The server is started once (a private PostgreSQL in a temporary data dir), on a free
# loopback port, and stopped with SIGTERM on exit. The spec under test is the server's
# GET /openapi.json unless --spec FILE is given (for trying a patched copy: the server
# still answers, only generation and schemathesis read FILE).
# Everything installed (Python venv, node_modules, generated code, reports) goes under
# target/contract/; the pinned versions live in requirements.txt, ts/package-lock.json
# and rust/Cargo.lock beside this script.
# By default every step runs and the script exits non-zero at the end if any failed
# (a step whose input an earlier step did not produce counts as failed); --fail-fast
# stops at the first failure. The last line is `contract: N passed, N failed`.
# Environment: CONTRACT_PY_WARNINGS_FATAL=1 (= --py-warnings-fatal), CONTRACT_ST_MAX_EXAMPLES,
# CONTRACT_ST_MAX_TIME, CONTRACT_ST_PHASES, CONTRACT_ST_WORKERS, CONTRACT_ST_SEED,
# CONTRACT_ST_EXTRA_ARGS (appended to `schemathesis run`, e.g. "--continue-on-failure"),
# CONTRACT_RATE_LIMIT (the server's RATE_LIMIT_IP/_USER/_API_KEY per minute; default 100000,
# far above what the harness sends), CONTRACT_WORK_DIR (default target/contract).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${CONTRACT_WORK_DIR:-$ROOT/target/contract}

SERVER_BIN=""
SPEC_FILE=""
ONLY=""
SKIP=""
FAIL_FAST=0
KEEP=0
# openapi-python-client warnings: reported always; fatal when 1. Flip to 1 once the spec is fixed.
PY_WARNINGS_FATAL=${CONTRACT_PY_WARNINGS_FATAL:-0}
# Schemathesis budget (see README.md for the measured run time).
ST_MAX_EXAMPLES=${CONTRACT_ST_MAX_EXAMPLES:-50}
ST_PHASES=${CONTRACT_ST_PHASES:-examples,coverage,fuzzing,stateful}
ST_WORKERS=${CONTRACT_ST_WORKERS:-2}
# Time budget for schemathesis: after the coverage phase, fuzzing and stateful repeat
# until it is spent (each fuzzing pass draws up to ST_MAX_EXAMPLES cases per operation).
ST_MAX_TIME=${CONTRACT_ST_MAX_TIME:-300}
ST_SEED=${CONTRACT_ST_SEED:-}
# The server's RATE_LIMIT_IP, _USER and _API_KEY, per 60 s (see start_server).
RATE_LIMIT=${CONTRACT_RATE_LIMIT:-100000}

while [ $# -gt 0 ]; do
    case "$1" in
        --server-bin) SERVER_BIN=$2; shift 2 ;;
        --spec) SPEC_FILE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --skip) SKIP=$2; shift 2 ;;
        --fail-fast) FAIL_FAST=1; shift ;;
        --keep) KEEP=1; shift ;;
        --py-warnings-fatal) PY_WARNINGS_FATAL=1; shift ;;
        --st-max-examples) ST_MAX_EXAMPLES=$2; shift 2 ;;
        --st-phases) ST_PHASES=$2; shift 2 ;;
        --st-workers) ST_WORKERS=$2; shift 2 ;;
        --st-max-time) ST_MAX_TIME=$2; shift 2 ;;
        --st-seed) ST_SEED=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

export PYTHONDONTWRITEBYTECODE=1  # nothing written into the source tree

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
NICE=(nice -n 19)

RUN_DIR=$WORK/run
VENV=$WORK/venv
TS_DIR=$WORK/ts
PY_OUT=$WORK/python
RS_OUT=$WORK/rust
mkdir -p "$WORK"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"

# ---------------------------------------------------------------------------- steps

declare -a RESULTS=()
FAILED=0
T_ALL=$(now)

wanted() {
    local name=$1
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 1; fi
    if [ -n "$SKIP" ] && [[ ",$SKIP," == *",$name,"* ]]; then return 1; fi
    return 0
}

# step NAME "TITLE" [FILE_NEEDED...] -- COMMAND...
# A step whose needed files (made by an earlier step) are missing is counted as failed.
step() {
    local name=$1 title=$2; shift 2
    local needs=()
    while [ "$1" != "--" ]; do needs+=("$1"); shift; done
    shift
    if ! wanted "$name"; then return 0; fi
    local need
    for need in "${needs[@]}"; do
        if [ ! -e "$need" ]; then
            printf '\n==> %s: SKIPPED, FAILED (needs %s, which an earlier step did not produce)\n' "$title" "$need"
            FAILED=$((FAILED + 1))
            RESULTS+=("$(printf '%-17s SKIPPED (missing %s)' "$name" "${need#"$WORK"/}")")
            return 0
        fi
    done
    printf '\n==============================================================================\n'
    printf '==> %s\n' "$title"
    printf '==============================================================================\n'
    local t0 rc=0
    t0=$(now)
    ( set -euo pipefail; "$@" ) || rc=$?
    local secs
    secs=$(elapsed "$t0")
    if [ "$rc" = 0 ]; then
        printf '<== %s: OK (%ss)\n' "$title" "$secs"
        RESULTS+=("$(printf '%-17s OK      %7ss' "$name" "$secs")")
    else
        FAILED=$((FAILED + 1))
        printf '<== %s: FAILED (exit %s, %ss)\n' "$title" "$rc" "$secs"
        RESULTS+=("$(printf '%-17s FAILED  %7ss' "$name" "$secs")")
        if [ "$FAIL_FAST" = 1 ]; then summary; exit 1; fi
    fi
}

summary() {
    printf '\n==============================================================================\n'
    printf '==> contract harness summary (total %ss; artifacts in %s)\n' "$(elapsed "$T_ALL")" "$RUN_DIR"
    local line
    for line in "${RESULTS[@]}"; do printf '    %s\n' "$line"; done
    local passed=0 failed=0
    for line in "${RESULTS[@]}"; do
        case "$line" in *" OK "*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
    done
    printf 'contract: %d passed, %d failed\n' "$passed" "$failed"
}

# ---------------------------------------------------------------------------- tools

install_tools() {
    local t0
    t0=$(now)
    printf '==> installing/checking pinned tools under %s\n' "$WORK"
    if ! command -v java >/dev/null 2>&1; then
        echo "    java is missing: installing default-jre-headless"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends default-jre-headless
    fi
    # Python: openapi-generator-cli (bundles the jar), openapi-python-client, schemathesis.
    local req_sum
    req_sum=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$req_sum" ]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            echo "    python3 -m venv failed: installing python3-venv"
            rm -rf "$VENV"
            export DEBIAN_FRONTEND=noninteractive
            as_root apt-get update -q
            as_root apt-get install -y -q --no-install-recommends python3-venv
            python3 -m venv "$VENV"
        fi
        "${NICE[@]}" "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
            -r "$HERE/requirements.txt"
        "$VENV/bin/pip" check
        echo "$req_sum" >"$VENV/.stamp"
    fi
    # Node: exact versions from ts/package-lock.json.
    mkdir -p "$TS_DIR"
    local lock_sum
    lock_sum=$(cat "$HERE/ts/package.json" "$HERE/ts/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [ ! -d "$TS_DIR/node_modules" ] || [ "$(cat "$TS_DIR/.stamp" 2>/dev/null)" != "$lock_sum" ]; then
        cp "$HERE/ts/package.json" "$HERE/ts/package-lock.json" "$TS_DIR/"
        (cd "$TS_DIR" && "${NICE[@]}" npm ci --no-audit --no-fund --loglevel=error)
        echo "$lock_sum" >"$TS_DIR/.stamp"
    fi
    printf '    java: %s\n' "$(java -version 2>&1 | head -1)"
    printf '    openapi-generator-cli %s, openapi-python-client %s, schemathesis %s\n' \
        "$("$VENV/bin/openapi-generator-cli" version 2>/dev/null | tail -1)" \
        "$("$VENV/bin/pip" show openapi-python-client | sed -n 's/^Version: //p')" \
        "$("$VENV/bin/pip" show schemathesis | sed -n 's/^Version: //p')"
    printf '    node %s; typescript %s, openapi-typescript %s, openapi-fetch %s\n' "$(node --version)" \
        "$(node -p 'require(process.argv[1]).version' "$TS_DIR/node_modules/typescript/package.json")" \
        "$(node -p 'require(process.argv[1]).version' "$TS_DIR/node_modules/openapi-typescript/package.json")" \
        "$(node -p 'require(process.argv[1]).version' "$TS_DIR/node_modules/openapi-fetch/package.json")"
    printf '<== tools ready (%ss)\n' "$(elapsed "$t0")"
}

# ---------------------------------------------------------------------------- server

SERVER_PID=""
STRIPE_PID=""
LLM_PID=""
DATA_DIR=""
SERVER_LOG=$RUN_DIR/server.log

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server did not stop within 10 s of SIGTERM; killing it" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [ -n "$STRIPE_PID" ]; then kill "$STRIPE_PID" 2>/dev/null || true; wait "$STRIPE_PID" 2>/dev/null || true; fi
    STRIPE_PID=""
    if [ -n "$LLM_PID" ]; then kill "$LLM_PID" 2>/dev/null || true; wait "$LLM_PID" 2>/dev/null || true; fi
    LLM_PID=""
    if [ -n "$DATA_DIR" ] && [ "$KEEP" = 0 ]; then rm -rf "$DATA_DIR"; fi
}
trap 'stop_server' EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
    local t0
    t0=$(now)
    if [ -z "$SERVER_BIN" ]; then
        SERVER_BIN=$ROOT/target/debug/palisade
        if [ ! -x "$SERVER_BIN" ]; then
            echo "==> building the server (cargo build --bin palisade)"
            (cd "$ROOT" && "${NICE[@]}" cargo build --bin palisade)
        fi
    fi
    [ -x "$SERVER_BIN" ] || { echo "server binary not found: $SERVER_BIN" >&2; exit 1; }
    PORT=$(free_port)
    DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/palisade-contract.XXXXXX")
    BASE_URL=http://127.0.0.1:$PORT
    printf '==> starting %s on %s (data dir %s, log %s)\n' "$SERVER_BIN" "$BASE_URL" "$DATA_DIR" "$SERVER_LOG"
    printf '    rate limits: %s requests per 60 s per IP, per user and per API key\n' "$RATE_LIMIT"
    # The server runs its own PostgreSQL as an unprivileged user: let it into the data dir.
    chmod 755 "$DATA_DIR"
    # Rate limits: the defaults (60 requests a minute per IP on the unauthenticated
    # operations, 1200 per user and org, 600 per API key) would turn most of what
    # schemathesis sends (two workers, every client from 127.0.0.1, one user) into 429s
    # within seconds, and its cases would test the limiter instead of the operations. The
    # limits stay on (not `off`): every request still runs the limiter statement and every
    # response carries the RateLimit-Policy/RateLimit headers the spec declares, which
    # schemathesis checks; they are just too high to be reached. (The per-account and
    # per-IP login throttle is separate and unchanged: see schemathesis/hooks.py.)
    # New orgs start on the enterprise plan for the same reason: the free plan's 600
    # requests a minute and 10 projects would answer most cases 429 and 402 (both declared,
    # and tested in tests/api/plans.rs), and its lack of custom meters 403 on the metering
    # operations, which schemathesis should exercise. A live tail lasts a second (instead of
    # an hour): each stream schemathesis opens answers in full, with what it had.
    # Billing talks to a minimal Stripe (tests/contract/stripe_fake.py), so its operations
    # are exercised rather than answering 503 billing_not_configured.
    local stripe_port
    stripe_port=$(free_port)
    python3 "$ROOT/tests/contract/stripe_fake.py" "$stripe_port" sk_contract &
    STRIPE_PID=$!
    # The assistant talks to an OpenAI-compatible fake (benches/llm_fake.py), so its chat
    # streams answers rather than answering 409 assistant_not_configured.
    local llm_port
    llm_port=$(free_port)
    python3 "$ROOT/benches/llm_fake.py" --port "$llm_port" --key sk-contract >/dev/null &
    LLM_PID=$!
    PALISADE_DATA_DIR=$DATA_DIR PORT=$PORT HOST=127.0.0.1 ACCESS_TOKEN_TTL_SECONDS=3600 \
        DEFAULT_PLAN=enterprise LIVE_TAIL_MAX_SECONDS=1 \
        STRIPE_SECRET_KEY=sk_contract STRIPE_WEBHOOK_SECRET=whsec_contract \
        STRIPE_API_BASE=http://127.0.0.1:$stripe_port \
        STRIPE_PRICE_IDS=pro=price_contract_pro,enterprise=price_contract_enterprise \
        LLM_BASE_URL=http://127.0.0.1:$llm_port/v1 LLM_API_KEY=sk-contract \
        RATE_LIMIT_IP=$RATE_LIMIT RATE_LIMIT_USER=$RATE_LIMIT RATE_LIMIT_API_KEY=$RATE_LIMIT \
        RATE_LIMIT_WINDOW_SECONDS=60 \
        RUST_LOG=info NO_COLOR=1 "$SERVER_BIN" serve 2>"$SERVER_LOG" >"$RUN_DIR/server.stdout" &
    SERVER_PID=$!
    local i
    for i in $(seq 1 240); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited during start-up; its log:" >&2
            tail -50 "$SERVER_LOG" >&2
            exit 1
        fi
        if curl -fsS -o /dev/null "$BASE_URL/ready" 2>/dev/null; then break; fi
        sleep 0.25
    done
    curl -fsS -o /dev/null "$BASE_URL/ready" || { echo "server not ready after 60 s" >&2; tail -50 "$SERVER_LOG" >&2; exit 1; }
    curl -fsS "$BASE_URL/openapi.json" -o "$RUN_DIR/openapi.live.json"
    if [ -n "$SPEC_FILE" ]; then
        cp "$SPEC_FILE" "$RUN_DIR/openapi.json"
        printf '    spec under test: %s (NOT the live spec)\n' "$SPEC_FILE"
    else
        cp "$RUN_DIR/openapi.live.json" "$RUN_DIR/openapi.json"
        printf '    spec under test: %s/openapi.json (live)\n' "$BASE_URL"
    fi
    if ! python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
        "$RUN_DIR/openapi.live.json" "$ROOT/openapi.json"; then
        echo "    note: the live /openapi.json differs from the committed openapi.json"
    fi
    printf '<== server ready (%ss)\n' "$(elapsed "$t0")"
}

SPEC=$RUN_DIR/openapi.json
OAG=("${NICE[@]}" "$VENV/bin/openapi-generator-cli")

# Prints how many WARN/ERROR lines openapi-generator logged, then each distinct one with its count.
oag_warnings() {
    local log=$1 label=$2 n
    n=$(grep -cE '^\[main\] (WARN|ERROR)|^Exception|^Errors:|^\s+- ' "$log" || true)
    printf '    %s: %s warning/error line(s)\n' "$label" "$n"
    if [ "$n" != 0 ]; then
        grep -E '^\[main\] (WARN|ERROR)|^Exception|^Errors:|^\s+- ' "$log" | sed -E 's/^\[main\] //' \
            | sort | uniq -c | sort -rn | sed 's/^/      /'
    fi
}

# ---------------------------------------------------------------------------- 1 validate

do_validate() {
    local log=$RUN_DIR/validate.log rc=0
    "${OAG[@]}" validate -i "$SPEC" --recommend >"$log" 2>&1 || rc=$?
    cat "$log"
    return "$rc"
}

# ---------------------------------------------------------------------------- 2 python

do_python() {
    local log=$RUN_DIR/python-generate.log rc=0
    rm -rf "$PY_OUT"
    mkdir -p "$PY_OUT"
    # ruff (a pinned dependency in the venv) formats the output: it must be on PATH.
    (cd "$PY_OUT" && PATH="$VENV/bin:$PATH" "${NICE[@]}" "$VENV/bin/openapi-python-client" generate \
        --path "$SPEC" --meta none --output-path "$PY_OUT/palisade_client") >"$log" 2>&1 || rc=$?
    cat "$log"
    if [ "$rc" != 0 ] || [ ! -f "$PY_OUT/palisade_client/client.py" ]; then
        echo "openapi-python-client failed (exit $rc)"
        return 1
    fi
    local n imports=0
    n=$("$VENV/bin/python" "$HERE/python/count_warnings.py" "$log")
    printf '    openapi-python-client warnings: %s\n' "$n"
    "${NICE[@]}" "$VENV/bin/python" "$HERE/python/import_check.py" "$PY_OUT" || imports=1
    if [ "$imports" != 0 ]; then
        echo "    FAIL: the generated client does not import"
        return 1
    fi
    if [ "$n" != 0 ]; then
        if [ "$PY_WARNINGS_FATAL" = 1 ]; then
            echo "    FAIL: warnings are fatal (--py-warnings-fatal / CONTRACT_PY_WARNINGS_FATAL=1)"
            return 1
        fi
        echo "    (not fatal yet: pass --py-warnings-fatal or CONTRACT_PY_WARNINGS_FATAL=1 once the spec is fixed)"
    fi
}

# ---------------------------------------------------------------------------- 3 typescript

prepare_ts() {
    rm -rf "$TS_DIR/gen" "$TS_DIR/build"
    mkdir -p "$TS_DIR/gen"
    cp "$HERE"/ts/*.ts "$HERE"/ts/tsconfig*.json "$TS_DIR/"
}

do_typescript_fetch() {
    local log=$RUN_DIR/typescript-fetch-generate.log rc=0
    "${OAG[@]}" generate -g typescript-fetch -i "$SPEC" -o "$TS_DIR/gen/typescript-fetch" \
        --additional-properties=supportsES6=true >"$log" 2>&1 || rc=$?
    oag_warnings "$log" "typescript-fetch generator"
    if [ "$rc" != 0 ]; then
        tail -30 "$log"
        echo "    typescript-fetch: generation FAILED (exit $rc)"
        return 1
    fi
    echo "    tsc --strict -p tsconfig.typescript-fetch.json"
    if ! (cd "$TS_DIR" && "${NICE[@]}" node_modules/.bin/tsc -p tsconfig.typescript-fetch.json); then
        echo "    typescript-fetch: tsc --strict FAILED"
        return 1
    fi
    echo "    typescript-fetch: compiles under --strict"
}

do_openapi_fetch() {
    local log=$RUN_DIR/openapi-typescript-generate.log rc=0
    mkdir -p "$TS_DIR/gen/openapi-typescript"
    (cd "$TS_DIR" && "${NICE[@]}" node_modules/.bin/openapi-typescript "$SPEC" \
        -o gen/openapi-typescript/schema.d.ts) >"$log" 2>&1 || rc=$?
    cat "$log"
    local n
    n=$(grep -ciE 'warn|error' "$log" || true)
    printf '    openapi-typescript: %s warning/error line(s)\n' "$n"
    if [ "$rc" != 0 ]; then
        echo "    openapi-typescript: generation FAILED (exit $rc)"
        return 1
    fi
    echo "    tsc --strict -p tsconfig.json (schema.d.ts + tour.ts -> build/tour.js)"
    if ! (cd "$TS_DIR" && "${NICE[@]}" node_modules/.bin/tsc -p tsconfig.json); then
        echo "    openapi-typescript + openapi-fetch: tsc --strict FAILED"
        return 1
    fi
    echo "    openapi-typescript + openapi-fetch: compiles under --strict"
}

# ---------------------------------------------------------------------------- 4 rust

do_rust() {
    local log=$RUN_DIR/rust-generate.log rc=0
    rm -rf "$RS_OUT/client"
    mkdir -p "$RS_OUT"
    "${OAG[@]}" generate -g rust -i "$SPEC" -o "$RS_OUT/client" \
        --additional-properties=packageName=palisade-client,packageVersion=0.0.0 >"$log" 2>&1 || rc=$?
    oag_warnings "$log" "rust generator"
    if [ "$rc" != 0 ]; then
        tail -30 "$log"
        echo "    rust: generation FAILED (exit $rc)"
        return 1
    fi
    # openapi-generator's rust target renames every response media type it sees
    # ("ApplicationJson cannot be used as a model name", one line per response: a minimal
    # one-operation spec gets them too; "TextCsv" for the usage report's CSV; "**" for a
    # document download's `*/*`) and RFC 9457's required `type` member (r#type).
    # That is the generator talking, not the spec; anything else is a real warning.
    local real
    real=$(grep -E '^\[main\] (WARN|ERROR)' "$log" \
        | grep -vE '((Application|Text)[A-Za-z+]+|\*\*) cannot be used as a model name|type cannot be used as a field/variable name' \
        | wc -l)
    printf '    rust generator: %s warning(s) about the spec (renames of media types and `type` are the generator own)\n' "$real"
    if [ "$real" != 0 ]; then
        echo "    rust: the generator warned about the spec"
        return 1
    fi
    # Pinned dependency versions; new dependencies (if the generator adds some) resolve on top.
    if [ -f "$HERE/rust/Cargo.lock" ]; then cp "$HERE/rust/Cargo.lock" "$RS_OUT/client/Cargo.lock"; fi
    # No TLS backend: the generated code is the same, and no OpenSSL headers are needed.
    echo "    cargo check -j1 --no-default-features (CARGO_TARGET_DIR=$RS_OUT/target)"
    rc=0
    (cd "$RS_OUT/client" && CARGO_TARGET_DIR=$RS_OUT/target "${NICE[@]}" \
        cargo check -j1 --no-default-features --message-format short) >"$RUN_DIR/rust-check.log" 2>&1 || rc=$?
    grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading|Locking|Adding|Updating|Blocking) ' \
        "$RUN_DIR/rust-check.log" || true
    if ! cmp -s "$HERE/rust/Cargo.lock" "$RS_OUT/client/Cargo.lock" 2>/dev/null; then
        echo "    note: Cargo.lock changed (new dependencies?): copy $RS_OUT/client/Cargo.lock to tests/contract/rust/"
    fi
    local warnings
    warnings=$(grep -c '^warning' "$RUN_DIR/rust-check.log" || true)
    printf '    cargo check: exit %s, %s compiler warning line(s)\n' "$rc" "$warnings"
    return "$rc"
}

# ---------------------------------------------------------------------------- 5 tours

do_tour_python() {
    PALISADE_URL=$BASE_URL PALISADE_SERVER_LOG=$SERVER_LOG PALISADE_SPEC=$SPEC \
        PYTHONPATH="$PY_OUT" "${NICE[@]}" "$VENV/bin/python" "$HERE/python/tour.py"
}

do_tour_ts() {
    PALISADE_URL=$BASE_URL PALISADE_SERVER_LOG=$SERVER_LOG PALISADE_SPEC=$SPEC \
        "${NICE[@]}" node "$TS_DIR/build/tour.js"
}

# ---------------------------------------------------------------------------- 6 schemathesis

do_schemathesis() {
    local report=$RUN_DIR/schemathesis
    mkdir -p "$report"
    local args=(run "$SPEC" --url "$BASE_URL"
        --checks all
        --phases "$ST_PHASES"
        --max-examples "$ST_MAX_EXAMPLES"
        --max-time "$ST_MAX_TIME"
        --workers "$ST_WORKERS"
        --request-timeout 30
        --output-sanitize false
        --report junit,ndjson --report-dir "$report")
    [ -n "$ST_SEED" ] && args+=(--seed "$ST_SEED")
    # shellcheck disable=SC2206
    [ -n "${CONTRACT_ST_EXTRA_ARGS:-}" ] && args+=(${CONTRACT_ST_EXTRA_ARGS})
    echo "    schemathesis ${args[*]}"
    local rc=0
    # Run from the report dir: nothing is written into the source tree.
    (cd "$report" && PALISADE_URL=$BASE_URL PALISADE_CONTRACT_REPORT=$report \
        SCHEMATHESIS_HOOKS="$HERE/schemathesis/hooks.py" \
        "${NICE[@]}" "$VENV/bin/schemathesis" --no-color --config-file "$HERE/schemathesis/schemathesis.toml" \
        "${args[@]}") >"$RUN_DIR/schemathesis.log" 2>&1 || rc=$?
    cat "$RUN_DIR/schemathesis.log"
    "$VENV/bin/python" "$HERE/schemathesis/coverage.py" "$SPEC" "$report" || rc=1
    return "$rc"
}

# ---------------------------------------------------------------------------- main

install_tools
start_server
prepare_ts

step validate         "1. openapi-generator validate"                                     -- do_validate
step python           "2. Python client: openapi-python-client generate (warnings counted)" -- do_python
step typescript-fetch "3a. TypeScript client: openapi-generator typescript-fetch, tsc --strict" -- do_typescript_fetch
step openapi-fetch    "3b. TypeScript client: openapi-typescript + openapi-fetch, tsc --strict" -- do_openapi_fetch
step rust             "4. Rust client: openapi-generator rust, cargo check"               -- do_rust
step tour-python      "5a. README tour through the Python client" \
    "$PY_OUT/palisade_client/client.py"                                                   -- do_tour_python
step tour-ts          "5b. README tour through the TypeScript client (openapi-fetch)" \
    "$TS_DIR/build/tour.js"                                                               -- do_tour_ts
step schemathesis     "6. schemathesis: every operation, all checks, stateful, two tenants" -- do_schemathesis

if grep -aqE 'panicked at' "$SERVER_LOG"; then
    echo
    echo "==> the server log has panics:"
    grep -aE -A3 'panicked at' "$SERVER_LOG" | head -40
fi
summary
stop_server
[ "$FAILED" = 0 ]
