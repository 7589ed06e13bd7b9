#!/usr/bin/env bash
# Palisade side-by-side benchmark: the API against the database's own limit.
#
#   benches/load.sh [--orgs N] [--projects N] [--duration S] [--clients "8 32"]
#                   [--routes "list create health keys metering storage audit billing ops assistant connections"]
#                   [--repeat N] [--extras] [--keep]
#
# In one run, on this machine, against one private PostgreSQL cluster:
#   1. builds the release server and starts it (embedded cluster under $BENCH_DIR);
#   2. seeds orgs (one owner user + live session each) and projects with set-based SQL;
#   3. for GET /v1/orgs/{org_id}/projects?limit=20, POST /v1/orgs/{org_id}/projects and
#      GET /health, at each client count: pgbench -M prepared running the exact
#      transaction the server runs (benches/pgbench/*.sql, as the runtime role), then wrk
#      against the server with valid JWTs for random orgs (benches/wrk/*.lua);
#   4. "keys" (API keys and rate limits, issue 10), side by side in each round: the list
#      with an API key (X-API-Key) vs the same list with a JWT; the list on a second
#      server on the same cluster with rate limits off (the first runs them on, with
#      quotas no run reaches); at 32 clients one hot key vs 32 distinct keys;
#      "metering" (plans and usage, issue 11): the list with API-call metering on (the
#      first server) vs a third server with USAGE_METERING=off; 1,000-event batches
#      through POST .../usage-events vs pgbench inserting the same rows with one
#      insert ... select from unnest(...) on conflict do nothing (events/s); GET .../usage
#      p99 for an org with $METERING_EVENTS (10 million) raw events vs one with 1,000;
#      "storage" (workspace storage, issue 12; examples/bench_storage.rs): a fourth server
#      on a real S3 server (s3s-fs, installed into target/tools when missing): 100-event
#      batches of 1 KB events through POST .../events vs PUTting the same bytes straight
#      to the bucket with the server's own S3 client; a 10,000-event conversation read
#      page by page vs GETting its 100 objects; $SSE_SUBSCRIBERS (1,000) live tails of one
#      conversation at 100 appends/s: delivery p50/p99 and server RSS per subscriber;
#      "audit" (the audit log, issue 13): POST .../projects with its audit row vs the same
#      with the audit trigger disabled (alternating, same server); the newest page of
#      GET .../audit-log for an org with $AUDIT_ROWS (10 million) rows vs one with 10,000;
#      "billing" (issue 14): signed Stripe webhook events at 200/s, open loop
#      (benches/webhook.py): acknowledge p50/p99, then 1,000 redeliveries, and the
#      database time of a redelivery (app.billing_receive_event on stored ids);
#      "ops" (operations, issue 16): the list on a server with METRICS_ADDR (metrics
#      recorded) vs the first server (none); the list on a server whose reads go to a
#      streaming replica of the bench cluster (pg_basebackup, same machine) vs the first
#      server (primary only);
#      "connections" (issue 17): the first server's RSS idle, its peak under the list at
#      32 clients, and holding $HOLD_CONNECTIONS (10,000) idle keep-alive connections
#      (benches/connections.py), with 100 more beyond its MAX_CONNECTIONS refused;
#      "assistant" (issue 15): time to first token of POST .../assistant/chat on a server
#      whose model is benches/llm_fake.py vs the same fake called directly (benches/ttft.py,
#      sequential, alternating rounds; the overhead includes retrieval over org 1's 10,000
#      ready chunks, benches/assistant-seed.sql); the retrieval statement itself
#      (assistant::RETRIEVE_SQL, as the runtime role in org 1's verified context, random
#      questions) by pgbench: p99 with org 1's 10,000 chunks alone vs among 1,000,000
#      chunks of 1,000 orgs, with EXPLAIN ANALYZE of each;
#   5. prints requests/s, p50, p99 for each and the ratios, ending with
#      `ratio api/pgbench at 32 clients: <x.xx>`.
# --extras adds the scale checks: EXPLAIN ANALYZE as the runtime role, RLS vs a
# bypassing role, and argon2 logins/s with /health p99 while logins saturate hashing.
# Everything shares the machine's cores, so read the ratios, not the absolutes. Each
# measurement is repeated (--repeat, default 3) with the sides alternating, and the run
# with the median throughput is reported, so a burst of other load on a shared machine
# moves one run, not the result.
# Only loopback and the cluster's Unix socket are used. The server and cluster are
# stopped (and $BENCH_DIR removed unless --keep) on exit.
set -euo pipefail

ORGS=10000
PROJECTS=""
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
CLIENTS=${CLIENTS:-"8 32"}
ROUTES=${ROUTES:-"list create health keys metering storage audit billing ops assistant connections"}
AUDIT_ROWS=${AUDIT_ROWS:-10000000}
METERING_EVENTS=${METERING_EVENTS:-10000000}
EXTRAS=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --orgs) ORGS=$2; shift 2 ;;
        --projects) PROJECTS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --routes) ROUTES=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --extras) EXTRAS=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
PROJECTS=${PROJECTS:-$((ORGS * 20))}
PER_ORG=$(( (PROJECTS + ORGS - 1) / ORGS ))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/palisade-bench-$$}
PORT=${PORT:-18080}
THREADS=${THREADS:-2}
JWT_SECRET=${JWT_SECRET:-bench-secret-$(date +%s)-$RANDOM$RANDOM$RANDOM}
PALISADE_MASTER_KEY=${PALISADE_MASTER_KEY:-bench-master-key-$(date +%s)-$RANDOM$RANDOM$RANDOM}
BENCH_PASSWORD=${BENCH_PASSWORD:-bench password 1234}
export JWT_SECRET PALISADE_MASTER_KEY BENCH_PASSWORD ORGS

log() { printf '\n== %s\n' "$*" >&2; }

# --- tools (fresh Debian: install what is missing) -------------------------------
need_apt=()
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/pgbench" ] || need_apt+=(postgresql postgresql-contrib)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v psql >/dev/null || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PGBENCH=$PG_BIN/pgbench

log "building the release server and the token helper"
(cd "$ROOT" && cargo build --release --quiet --bin palisade --example bench_tokens --example bench_storage)
SERVER=$ROOT/target/release/palisade
HELPER=$ROOT/target/release/examples/bench_tokens

# --- server + cluster ------------------------------------------------------------
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
SOCK=$BENCH_DIR/postgres
SERVER_PID=""
SERVER2_PID=""
SERVER3_PID=""
SERVER4_PID=""
S3_PID=""
OPS_PIDS=""
ASSISTANT_PIDS=""
REPLICA_DIR=""
# Runs a PostgreSQL binary as the user that owns the cluster (the server runs it as
# postgres or nobody when started as root).
as_cluster_user() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u "$(stat -c %U "$SOCK")" -- "$@"; else "$@"; fi
}
cleanup() {
    set +e
    for pid in $OPS_PIDS $ASSISTANT_PIDS; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    if [ -n "$REPLICA_DIR" ] && [ -f "$REPLICA_DIR/postmaster.pid" ]; then
        as_cluster_user "$PG_BIN/pg_ctl" stop -m immediate -D "$REPLICA_DIR" >/dev/null 2>&1
    fi
    if [ -n "$SERVER4_PID" ]; then kill -TERM "$SERVER4_PID" 2>/dev/null; wait "$SERVER4_PID" 2>/dev/null; fi
    if [ -n "$S3_PID" ]; then kill -TERM "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null; fi
    if [ -n "$SERVER2_PID" ]; then kill -TERM "$SERVER2_PID" 2>/dev/null; wait "$SERVER2_PID" 2>/dev/null; fi
    if [ -n "$SERVER3_PID" ]; then kill -TERM "$SERVER3_PID" 2>/dev/null; wait "$SERVER3_PID" 2>/dev/null; fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 1 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    # The server stops its cluster on SIGTERM; make sure, even if it crashed.
    if [ -f "$SOCK/postmaster.pid" ]; then
        if [ "$(id -u)" -eq 0 ]; then
            su postgres -s /bin/sh -c "$PG_BIN/pg_ctl stop -m immediate -D '$SOCK'" >/dev/null 2>&1 ||
                runuser -u nobody -- "$PG_BIN/pg_ctl" stop -m immediate -D "$SOCK" >/dev/null 2>&1
        else
            "$PG_BIN/pg_ctl" stop -m immediate -D "$SOCK" >/dev/null 2>&1
        fi
    fi
    if [ "$KEEP" -eq 0 ]; then rm -rf "$BENCH_DIR"; else echo "kept $BENCH_DIR" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the server (data in $BENCH_DIR, port $PORT)"
# Rate limits on (every request runs its limiter statement) with quotas no run reaches,
# so throughput is measured, not refusals; the second server below runs them off.
UNREACHED=1000000000
PALISADE_DATA_DIR=$BENCH_DIR HOST=127.0.0.1 PORT=$PORT RUST_LOG=${RUST_LOG:-info} \
    RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED RATE_LIMIT_IP=$UNREACHED \
    "$SERVER" serve 2>"$BENCH_DIR/server.log" &
SERVER_PID=$!
for i in $(seq 1 240); do
    if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$BENCH_DIR/server.log" >&2; exit 1; }
    [ "$i" -eq 240 ] && { echo "server not ready after 120 s" >&2; tail -20 "$BENCH_DIR/server.log" >&2; exit 1; }
    sleep 0.5
done

psql_as() { local user=$1; shift; "$PG_BIN/psql" -X -q -h "$SOCK" -U "$user" -d palisade "$@"; }

log "seeding $ORGS orgs, $PER_ORG projects each ($((ORGS * PER_ORG)) projects)"
PWHASH=$("$HELPER" hash "$BENCH_PASSWORD")
PROOF_KEY=$("$HELPER" proof-key)
seed_start=$(date +%s)
psql_as postgres -v orgs="$ORGS" -v per_org="$PER_ORG" -v pwhash="$PWHASH" -v proofkey="$PROOF_KEY" \
    -f "$ROOT/benches/seed.sql"
echo "seeded in $(( $(date +%s) - seed_start )) s" >&2
TOKENS_FILE=$BENCH_DIR/tokens.txt
"$HELPER" tokens "$ORGS" >"$TOKENS_FILE"
# One API key per org (role member, created by its owner): stored as SHA-256, as the
# server stores them.
KEYS_FILE=$BENCH_DIR/keys.txt
"$HELPER" keys "$ORGS" >"$KEYS_FILE"
psql_as postgres <<SQL
\set ON_ERROR_STOP on
create temp table bench_keys (org uuid, secret text);
\copy bench_keys from '$KEYS_FILE' with (delimiter ' ')
begin;
set local session_replication_role = replica;
insert into app.api_keys (org_id, id, name, role, start, created_by, secret_hash)
select org, ('0000000d' || substr(org::text, 9))::uuid, 'bench', 'member', left(secret, 8),
       ('0000000b' || substr(org::text, 9))::uuid, sha256(convert_to(secret, 'UTF8'))
  from bench_keys;
commit;
vacuum analyze app.api_keys;
SQL
export TOKENS_FILE KEYS_FILE WRK_DIR=$ROOT/benches/wrk

url() { printf 'postgresql:///palisade?host=%s&user=%s' "$SOCK" "$1"; }
# Another server on the same cluster: start_server NAME PORT [VAR=value ...] (its own
# settings after the shared ones); waits until it is ready; its pid in STARTED_PID.
start_server() {
    local name=$1 port=$2; shift 2
    mkdir -p "$BENCH_DIR/$name"
    env PALISADE_DATA_DIR="$BENCH_DIR/$name" HOST=127.0.0.1 PORT="$port" RUST_LOG="${RUST_LOG:-info}" \
        DATABASE_URL="$(url palisade_app)" DATABASE_AUTH_URL="$(url palisade_auth)" \
        DATABASE_WORKER_URL="$(url palisade_worker)" DATABASE_OWNER_URL="$(url palisade_owner)" \
        "$@" "$SERVER" serve 2>"$BENCH_DIR/server-$name.log" &
    STARTED_PID=$!
    for i in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then return 0; fi
        kill -0 "$STARTED_PID" 2>/dev/null || { tail -20 "$BENCH_DIR/server-$name.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "server $name not ready after 60 s" >&2
    exit 1
}

# A second server, rate limits off: the "limits on vs off" pair.
PORT2=$((PORT + 1))
start_server nolimits "$PORT2" RATE_LIMIT_API_KEY=off RATE_LIMIT_USER=off RATE_LIMIT_IP=off
SERVER2_PID=$STARTED_PID

# A third, with API-call metering off (limits on): the "metering on vs off" pair.
PORT3=$((PORT + 2))
start_server nometer "$PORT3" RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED \
    RATE_LIMIT_IP=$UNREACHED USAGE_METERING=off
SERVER3_PID=$STARTED_PID

# --- runners ---------------------------------------------------------------------
RESULTS=$BENCH_DIR/results.tsv
: >"$RESULTS"

# pgbench: tps from its summary; p50/p99 from the per-transaction log (column 3, µs).
run_pgbench() { # name script clients [user]
    local name=$1 script=$2 clients=$3 user=${4:-palisade_app}
    local dir=$BENCH_DIR/pgbench-$name-$clients
    mkdir -p "$dir"
    (cd "$dir" && "$PGBENCH" -n -M prepared -h "$SOCK" -U "$user" -c "$clients" -j "$THREADS" \
        -T "$DURATION" ${PGBENCH_RATE:+-R "$PGBENCH_RATE"} -D orgs="$ORGS" -D proofkey="$PROOF_KEY" -f "$script" -l --log-prefix=tx palisade >out.txt 2>err.txt) ||
        { cat "$dir/err.txt" >&2; exit 1; }
    local tps failed
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$dir/out.txt")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/out.txt")
    local pcts
    pcts=$(cat "$dir"/tx.* | awk '{print $3}' | sort -n |
        awk '{a[NR]=$1} END {p50=a[int(NR*0.50)>0?int(NR*0.50):1]; p99=a[int(NR*0.99)>0?int(NR*0.99):1]; printf "%.3f %.3f", p50/1000, p99/1000}')
    rm -f "$dir"/tx.*
    printf 'pgbench\t%s\t%s\t%s\t%s\t%s\n' "$name" "$clients" "$tps" "$pcts" "${failed:-0}" |
        tr ' ' '\t' >>"$RESULTS"
    printf '  pgbench %-12s c=%-3s %10.0f tx/s  p50 %s ms  p99 %s ms  failed %s\n' \
        "$name" "$clients" "$tps" ${pcts} "${failed:-0}" >&2
}

to_ms() { # wrk prints 812.00us / 1.20ms / 1.01s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

run_wrk() { # name clients url [script] [connections-label]
    local name=$1 clients=$2 url=$3 script=${4:-}
    local out=$BENCH_DIR/wrk-$name-$clients.txt
    local args=(-t "$THREADS" -c "$clients" -d "${DURATION}s" --latency --timeout 10s)
    [ -n "$script" ] && args+=(-s "$ROOT/benches/wrk/$script")
    wrk "${args[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
    local rps p50 p99 bad
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    local errs
    errs=$(awk '/Socket errors:/ {s=0; for (i=4;i<=NF;i+=2) s+=$i; print s}' "$out")
    bad=$(( ${bad:-0} + ${errs:-0} ))
    printf 'api\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$clients" "$rps" "$p50" "$p99" "$bad" >>"$RESULTS"
    printf '  api     %-12s c=%-3s %10.0f req/s p50 %s ms  p99 %s ms  errors %s\n' \
        "$name" "$clients" "$rps" "$p50" "$p99" "$bad" >&2
}

BASE=http://127.0.0.1:$PORT
BASE2=http://127.0.0.1:$PORT2
BASE3=http://127.0.0.1:$PORT3
ORG1=$(head -1 "$TOKENS_FILE" | cut -d' ' -f1)
TOKEN1=$(head -1 "$TOKENS_FILE" | cut -d' ' -f2)
check=$(curl -fsS -H "Authorization: Bearer $TOKEN1" "$BASE/v1/orgs/$ORG1/projects?limit=20" |
    grep -o '"id"' | wc -l)
[ "$check" -eq 20 ] || [ "$check" -eq "$PER_ORG" ] || { echo "sanity check: list returned $check items" >&2; exit 1; }
KEY1=$(head -1 "$KEYS_FILE" | cut -d' ' -f2)
check=$(curl -fsS -H "X-API-Key: $KEY1" "$BASE/v1/orgs/$ORG1/projects?limit=20" | grep -o '"id"' | wc -l)
[ "$check" -eq 20 ] || [ "$check" -eq "$PER_ORG" ] || { echo "sanity check: list with a key returned $check items" >&2; exit 1; }
if curl -fsS -D - -o /dev/null -H "Authorization: Bearer $TOKEN1" "$BASE2/v1/orgs/$ORG1/projects?limit=20" |
    grep -qi '^ratelimit:'; then echo "sanity check: the second server has limits on" >&2; exit 1; fi

log "warm-up (not recorded)"
(cd "$BENCH_DIR" && "$PGBENCH" -n -M prepared -h "$SOCK" -U palisade_app -c 8 -j "$THREADS" -T 3 \
    -D orgs="$ORGS" -D proofkey="$PROOF_KEY" -f "$ROOT/benches/pgbench/list.sql" palisade >/dev/null)
wrk -t "$THREADS" -c 8 -d 3s -s "$ROOT/benches/wrk/list.lua" "$BASE" >/dev/null

wants() { case " $ROUTES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if wants list; then
    log "GET /v1/orgs/{org_id}/projects?limit=20 (${DURATION}s each, $REPEAT rounds)"
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_pgbench list "$ROOT/benches/pgbench/list.sql" "$c"
            run_pgbench list-pipelined "$ROOT/benches/pgbench/list-pipelined.sql" "$c"
            run_pgbench list-full "$ROOT/benches/pgbench/list-full.sql" "$c"
            run_wrk list "$c" "$BASE" list.lua
        done
    done
fi
if wants create; then
    log "POST /v1/orgs/{org_id}/projects"
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_pgbench create "$ROOT/benches/pgbench/create.sql" "$c"
            run_wrk create "$c" "$BASE" create.lua
        done
    done
fi
if wants keys; then
    log "API keys and rate limits: the list with a key / with a JWT / with limits off, hot key"
    for c in $CLIENTS; do
        for i in $(seq "$REPEAT"); do
            # Which side runs first alternates round by round (a pair's second run meets
            # a warmer cache, or the tail of the first's vacuum).
            if [ $((i % 2)) -eq 1 ]; then
                run_wrk list-jwt "$c" "$BASE" list.lua
                run_wrk list-key "$c" "$BASE" list-key.lua
            else
                run_wrk list-key "$c" "$BASE" list-key.lua
                run_wrk list-jwt "$c" "$BASE" list.lua
            fi
            run_wrk list-nolimits "$c" "$BASE2" list.lua
        done
    done
    for _ in $(seq "$REPEAT"); do
        export HOT_KEYS=1; run_wrk hot-key 32 "$BASE" list-key.lua
        export HOT_KEYS=32; run_wrk keys-32 32 "$BASE" list-key.lua
        unset HOT_KEYS
    done
fi
if wants metering; then
    log "plans and metering: setup (a sum meter per org; $METERING_EVENTS raw events in org 1, 1,000 in org 2)"
    ORG2=$(sed -n 2p "$TOKENS_FILE" | cut -d' ' -f1)
    psql_as postgres -v org1="$ORG1" -v org2="$ORG2" -v big="$METERING_EVENTS" <<'SQL'
\set ON_ERROR_STOP on
insert into app.meters (org_id, key, name, aggregation) select id, 'tokens', 'Tokens', 'sum' from app.orgs;
-- Raw events and the rollups they would have produced (the read must not depend on the
-- raw count: that is the point of the measurement).
insert into app.usage_events (org_id, event_id, meter_key, value, occurred_at, period)
select o.org, 'seed-' || g, 'tokens', g % 97, now(), app.period_of(now())
  from (values (:'org1'::uuid, :big::bigint), (:'org2'::uuid, 1000)) o(org, n), generate_series(1, o.n) g;
insert into app.usage_periods (org_id, meter_key, period, aggregation, value, events)
select org_id, 'tokens', app.period_of(now()), 'sum', sum(value), count(*) from app.usage_events group by org_id;
vacuum analyze app.meters, app.usage_events, app.usage_periods;
SQL
    log "metering: the list with API-call metering on / off, ingestion, usage reads (${DURATION}s each, $REPEAT rounds)"
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_wrk list-metered "$c" "$BASE" list.lua
            run_wrk list-nometer "$c" "$BASE3" list.lua
        done
    done
    for _ in $(seq "$REPEAT"); do
        run_pgbench ingest-raw "$ROOT/benches/pgbench/ingest-raw.sql" 8 palisade_owner
        run_wrk ingest 8 "$BASE" ingest.lua
        export USAGE_ORG_LINE=1; run_wrk usage-big 8 "$BASE" usage.lua
        export USAGE_ORG_LINE=2; run_wrk usage-small 8 "$BASE" usage.lua
        unset USAGE_ORG_LINE
    done
fi
if wants storage; then
    log "workspace storage: a real S3 server (s3s-fs) and a fourth server on it"
    S3S_FS=${S3S_FS_BIN:-}
    for cand in "$ROOT/target/tools/bin/s3s-fs" "$HOME/.cargo/bin/s3s-fs" "$(command -v s3s-fs || true)"; do
        [ -z "$S3S_FS" ] && [ -n "$cand" ] && [ -x "$cand" ] && S3S_FS=$cand
    done
    if [ -z "$S3S_FS" ]; then
        log "installing s3s-fs 0.14.1 into target/tools (about 2 minutes)"
        cargo install s3s-fs --locked --features binary --version 0.14.1 --root "$ROOT/target/tools" --quiet
        S3S_FS=$ROOT/target/tools/bin/s3s-fs
    fi
    S3_PORT=$((PORT + 3)); PORT4=$((PORT + 4))
    mkdir -p "$BENCH_DIR/s3"
    "$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret-key \
        "$BENCH_DIR/s3" >/dev/null 2>&1 &
    S3_PID=$!
    export S3_ENDPOINT=http://127.0.0.1:$S3_PORT S3_BUCKET=bench S3_ACCESS_KEY_ID=bench \
        S3_SECRET_ACCESS_KEY=bench-secret-key S3_REGION=us-east-1
    # 1,000 tails: a socket each in the server and in the client (limits are inherited).
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    start_server storage "$PORT4" RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED \
        RATE_LIMIT_IP=$UNREACHED
    SERVER4_PID=$STARTED_PID
    DURATION=$DURATION REPEAT=$REPEAT CLIENTS=$CLIENTS SSE_SUBSCRIBERS=${SSE_SUBSCRIBERS:-1000} \
        "$ROOT/target/release/examples/bench_storage" "http://127.0.0.1:$PORT4" "$TOKEN1" "$ORG1" "$SERVER4_PID" \
        >>"$RESULTS" || { tail -20 "$BENCH_DIR/server-storage.log" >&2; exit 1; }
fi
if wants audit; then
    log "audit log: setup ($AUDIT_ROWS rows in org 1's chain, 10,000 in org 2's; both on Enterprise)"
    ORG2=$(sed -n 2p "$TOKENS_FILE" | cut -d' ' -f1)
    # Seeded directly (triggers off, so no chain hashes are computed): the read measured
    # does not depend on them, and 10 million appends one by one would take the run.
    psql_as postgres -v org1="$ORG1" -v org2="$ORG2" -v big="$AUDIT_ROWS" <<'SQL'
\set ON_ERROR_STOP on
-- Enterprise: the audit log feature, and no plan rate limit (Pro's 3,000 a minute would
-- answer 429s instead of pages).
update app.org_plans set plan_id = 'enterprise' where org_id in (:'org1', :'org2');
begin;
set local session_replication_role = replica;
insert into app.audit_log (org_id, seq, occurred_at, actor_type, action, targets, metadata, prev_hash, hash)
select o.org, b.last + g, now() - make_interval(secs => o.n - g), 'system', 'bench.filler',
       jsonb_build_array(jsonb_build_object('type', 'project', 'id', gen_random_uuid())),
       jsonb_build_object('n', g), sha256(int8send(g - 1)), sha256(int8send(g))
  from (values (:'org1'::uuid, :big::bigint), (:'org2'::uuid, 10000)) o(org, n)
 cross join lateral (select coalesce(max(l.seq), 0) as last from app.audit_log l where l.chain_id = o.org) b
 cross join generate_series(1, o.n) g;
commit;
vacuum analyze app.audit_log;
SQL
    log "audit log: project creation audited / not, newest page at 10M / 10k rows (${DURATION}s each, $REPEAT rounds)"
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_wrk create-audited "$c" "$BASE" create.lua
            psql_as postgres -c "alter table app.projects disable trigger audit_projects"
            run_wrk create-unaudited "$c" "$BASE" create.lua
            psql_as postgres -c "alter table app.projects enable trigger audit_projects"
        done
    done
    for _ in $(seq "$REPEAT"); do
        export AUDIT_ORG_LINE=1; run_wrk audit-big 8 "$BASE" audit.lua
        export AUDIT_ORG_LINE=2; run_wrk audit-small 8 "$BASE" audit.lua
        unset AUDIT_ORG_LINE
    done
fi
if wants health; then
    log "GET /health (no database)"
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_wrk health "$c" "$BASE/health"
        done
    done
fi

# --- extras: scale checks ----------------------------------------------------------
if [ "$EXTRAS" -eq 1 ]; then
    log "EXPLAIN ANALYZE of the list query as the runtime role (org 1)"
    I=100000000001
    psql_as palisade_app <<SQL
begin transaction read only;
select app.set_request_context('0000000c-0000-4000-8000-$I', public.hmac(uuid_send('0000000c-0000-4000-8000-$I'), decode('$PROOF_KEY', 'hex'), 'sha256'), '0000000a-0000-4000-8000-$I') as role \gset
explain (analyze, buffers, costs off, timing on)
select id, org_id, name, description, created_at, updated_at from app.projects order by created_at, id limit 21;
commit;
SQL
    log "RLS vs a bypassing role (superuser, explicit org filter), at 32 clients"
    run_pgbench list-bypass "$ROOT/benches/pgbench/list-bypass.sql" 32 postgres
    run_pgbench list-bypass-context "$ROOT/benches/pgbench/list-bypass-context.sql" 32 postgres
    log "argon2 logins (16 connections) with /health (4 connections) alongside"
    run_wrk health-idle 4 "$BASE/health"
    wrk -t 1 -c 16 -d "$((DURATION + 2))s" --latency --timeout 10s -s "$ROOT/benches/wrk/login.lua" "$BASE" \
        >"$BENCH_DIR/wrk-login-16.txt" 2>&1 &
    login_pid=$!
    sleep 1
    run_wrk health-under-login 4 "$BASE/health"
    wait "$login_pid"
    awk '/^Requests\/sec:/ {print "  logins/s: " $2} $1=="99%" {print "  login p99: " $2} /Non-2xx/ {print "  login non-2xx: " $NF}' \
        "$BENCH_DIR/wrk-login-16.txt" >&2
    printf 'api\tlogin\t16\t%s\t-\t-\t-\n' "$(awk '/^Requests\/sec:/ {print $2}' "$BENCH_DIR/wrk-login-16.txt")" >>"$RESULTS"
fi

if wants billing; then
    log "billing: Stripe webhook acknowledgements at 200/s for ${DURATION}s, then 1,000 redeliveries"
    PORT5=$((PORT + 5))
    start_server billing "$PORT5" STRIPE_SECRET_KEY=sk_bench STRIPE_WEBHOOK_SECRET=whsec_bench \
        STRIPE_API_BASE=http://127.0.0.1:9 RATE_LIMIT_IP=off
    billing_pid=$STARTED_PID
    psql_as postgres -At -c "select id from app.orgs order by id limit 200" >"$BENCH_DIR/billing-orgs.txt"
    python3 "$ROOT/benches/webhook.py" --base "http://127.0.0.1:$PORT5" --secret whsec_bench \
        --orgs "$BENCH_DIR/billing-orgs.txt" --rate 200 --seconds "$DURATION" --replays 1000 >>"$RESULTS"
    # The database time of a redelivery: app.billing_receive_event on 1,000 stored ids.
    dup_ms=$(psql_as postgres -c "do \$\$ declare t0 timestamptz := clock_timestamp(); n int := 0; r record;
        begin for r in select * from app.billing_events limit 1000 loop
            perform app.billing_receive_event(r.id, r.type, r.created, r.livemode, r.payload, true); n := n + 1;
        end loop; raise notice 'dup_ms=%', extract(epoch from clock_timestamp() - t0) * 1000 / greatest(n, 1); end \$\$" 2>&1 |
        sed -n 's/.*dup_ms=\([0-9.]*\).*/\1/p')
    printf 'db\twebhook-duplicate\t1\t%s\t-\t-\t-\n' "${dup_ms:-nan}" >>"$RESULTS"
    kill "$billing_pid"; wait "$billing_pid" 2>/dev/null || true
    # The same transaction straight from pgbench at the same rate: the database's own p99.
    PGBENCH_RATE=200 run_pgbench webhook-receive "$ROOT/benches/pgbench/webhook.sql" 32 palisade_auth
fi

if wants ops; then
    log "operations: metrics recorded / not; reads on a streaming replica / on the primary"
    PORT6=$((PORT + 6)); PORT7=$((PORT + 7)); PORT8=$((PORT + 8))
    start_server metrics "$PORT6" RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED \
        RATE_LIMIT_IP=$UNREACHED METRICS_ADDR=127.0.0.1:$PORT8
    OPS_PIDS="$OPS_PIDS $STARTED_PID"
    REPLICA_DIR=$BENCH_DIR/replica
    mkdir -p "$REPLICA_DIR"; chmod 700 "$REPLICA_DIR"
    [ "$(id -u)" -ne 0 ] || chown "$(stat -c %U "$SOCK")" "$REPLICA_DIR"
    as_cluster_user "$PG_BIN/pg_basebackup" -h "$SOCK" -U postgres -X stream -R -c fast -D "$REPLICA_DIR"
    # The copy holds the primary's socket lock and log (both live in its data directory).
    rm -f "$REPLICA_DIR/.s.PGSQL.5432.lock" "$REPLICA_DIR/server.log"
    as_cluster_user "$PG_BIN/pg_ctl" start -w -D "$REPLICA_DIR" -l "$REPLICA_DIR/server.log" \
        -o "-k '$REPLICA_DIR'" >/dev/null
    start_server replica "$PORT7" RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED \
        RATE_LIMIT_IP=$UNREACHED DATABASE_REPLICA_URLS="postgresql:///palisade?host=$REPLICA_DIR&user=palisade_app"
    OPS_PIDS="$OPS_PIDS $STARTED_PID"
    sleep 2   # the replica's first probes put it in the rotation
    for c in $CLIENTS; do
        for _ in $(seq "$REPEAT"); do
            run_wrk list-plain "$c" "$BASE" list.lua
            run_wrk list-metrics "$c" "http://127.0.0.1:$PORT6" list.lua
            run_wrk list-replica "$c" "http://127.0.0.1:$PORT7" list.lua
        done
    done
    curl -fsS "http://127.0.0.1:$PORT8/metrics" | grep -E '^palisade_db_reads_total|^palisade_db_replica_up' >&2 || true
fi

if wants assistant; then
    log "assistant: setup (a fake model, a server using it; org 1 with 10,000 ready chunks)"
    FAKE_KEY=sk-bench-$RANDOM$RANDOM$RANDOM
    python3 "$ROOT/benches/llm_fake.py" --port 0 --key "$FAKE_KEY" >"$BENCH_DIR/llm-fake.port" &
    ASSISTANT_PIDS="$ASSISTANT_PIDS $!"
    for _ in $(seq 1 50); do [ -s "$BENCH_DIR/llm-fake.port" ] && break; sleep 0.1; done
    FAKE_URL=http://127.0.0.1:$(head -1 "$BENCH_DIR/llm-fake.port")/v1
    PORT9=$((PORT + 9))
    start_server assistant "$PORT9" RATE_LIMIT_API_KEY=$UNREACHED RATE_LIMIT_USER=$UNREACHED \
        RATE_LIMIT_IP=$UNREACHED LLM_BASE_URL="$FAKE_URL" LLM_API_KEY="$FAKE_KEY" \
        LLM_MODEL=bench-model LLM_ALLOW_PRIVATE_NETWORKS=on
    ASSISTANT_PIDS="$ASSISTANT_PIDS $STARTED_PID"
    WORDS=$(cat "$ROOT/benches/assistant-words.txt")
    seed_start=$(date +%s)
    psql_as postgres -v part=alone -v words="$WORDS" -f "$ROOT/benches/assistant-seed.sql"
    echo "seeded in $(( $(date +%s) - seed_start )) s" >&2
    # Questions in the words of the documents: each shares a few words with some chunks
    # (and, as real questions do, "the", "is", "how" with nearly all of them).
    QUESTIONS=(
        "How does the library handle memory allocation for large data?"
        "Which features are supported by the async runtime?"
        "How do I configure the cache for faster parsing?"
        "What errors can the parser return for invalid unicode strings?"
        "Is the hash map implementation thread safe?"
        "How can I serialize data to json without allocation?"
        "What is the minimum supported rust version?"
        "Does the compiler optimize this code for performance?"
    )
    # The retrieval transaction as the server runs it (src/api/workspace/assistant.rs):
    # BEGIN read only, the context statement (org 1's owner; it also picks the question),
    # RETRIEVE_SQL with the question as $1 and the server's limit as $3, COMMIT. No document
    # filter: the server binds NULL as $2, which pgbench cannot bind, so NULL is written
    # in its place (a custom plan folds it the same way).
    "$HELPER" retrieve-sql >"$BENCH_DIR/retrieve-sql.txt"
    RETRIEVE_LIMIT=$(tail -1 "$BENCH_DIR/retrieve-sql.txt")
    RETRIEVE_SCRIPT=$BENCH_DIR/retrieve.sql
    {
        echo '\set i 100000000001'
        echo "\\set q random(1, ${#QUESTIONS[@]})"
        echo "\\set lim $RETRIEVE_LIMIT"
        echo 'begin transaction read only;'
        printf '%s' "select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid), (array["
        for j in "${!QUESTIONS[@]}"; do [ "$j" -eq 0 ] || printf ', '; printf "'%s'" "${QUESTIONS[$j]}"; done
        echo '])[:q] as question \gset'
        sed '$d' "$BENCH_DIR/retrieve-sql.txt" | sed -e 's/\$1/:question/g' -e 's/\$2/null/g' \
            -e 's/\$3/:lim/g' | tr '\n' ' ' | sed 's/ *$/;\n/'
        echo 'commit;'
    } >"$RETRIEVE_SCRIPT"
    explain_retrieve() { # EXPLAIN ANALYZE of RETRIEVE_SQL, as the runtime role in org 1's context
        local i=100000000001 sql
        sql=$(sed '$d' "$BENCH_DIR/retrieve-sql.txt")
        psql_as palisade_app <<SQL >&2
begin transaction read only;
select app.set_request_context('0000000c-0000-4000-8000-$i', public.hmac(uuid_send('0000000c-0000-4000-8000-$i'), decode('$PROOF_KEY', 'hex'), 'sha256'), '0000000a-0000-4000-8000-$i') as role \gset
prepare retrieve(text, uuid[], bigint) as $sql;
explain (analyze, buffers, costs off, timing on) execute retrieve('${QUESTIONS[0]}', null, $RETRIEVE_LIMIT);
commit;
SQL
    }
    # The sanity check: the answer cites org 1's chunks.
    check=$(curl -fsS -N -H "Authorization: Bearer $TOKEN1" -H 'Content-Type: application/json' \
        -d "{\"message\": \"${QUESTIONS[0]}\"}" "http://127.0.0.1:$PORT9/v1/orgs/$ORG1/assistant/chat" |
        grep -c '"chunk_no"' || true)
    [ "$check" -ge 1 ] || { echo "sanity check: the assistant cited no chunk" >&2; tail -20 "$BENCH_DIR/server-assistant.log" >&2; exit 1; }
    # Side (a): the fake called directly with a request of the server's shape (the system
    # prompt with 5 chunks of context, the question, stream with usage).
    DIRECT_BODY=$(psql_as postgres -At -v org="$ORG1" -v q="${QUESTIONS[0]}" <<'SQL'
select json_build_object('model', 'bench-model', 'stream', true, 'stream_options', json_build_object('include_usage', true),
       'max_tokens', 1024, 'messages', json_build_array(
           json_build_object('role', 'system', 'content', 'You are the assistant. Context:' || string_agg(content, E'\n\n')),
           json_build_object('role', 'user', 'content', :'q')))
  from (select content from app.document_chunks where org_id = :'org' limit 5) c;
SQL
)
    run_ttft() { # name side url body [header]
        local name=$1 side=$2 url=$3 body=$4 out
        shift 4
        out=$(python3 "$ROOT/benches/ttft.py" "$url" "$@" --body "$body" -n "${TTFT_REQUESTS:-300}") ||
            { echo "ttft $name: $out" >&2; exit 1; }
        python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print("\t".join([sys.argv[2], sys.argv[3], "1", "%.1f" % (1000 / r["total_mean_ms"]),
                 "%.3f" % r["ttft_p50_ms"], "%.3f" % r["ttft_p99_ms"], str(r["errors"] + r["no_token"])]))' \
            "$out" "$side" "$name" >>"$RESULTS"
        tail -1 "$RESULTS" | awk -F'\t' '{ printf "  %-7s %-16s time to first token p50 %s ms  p99 %s ms  errors %s\n", $1, $2, $5, $6, $7 }' >&2
        TTFT_P50=$(tail -1 "$RESULTS" | cut -f5)
    }
    log "assistant: time to first token, the fake model direct / through POST .../assistant/chat ($REPEAT rounds, ${TTFT_REQUESTS:-300} requests each)"
    run_ttft ttft-warmup llm "$FAKE_URL/chat/completions" "$DIRECT_BODY" --header "Authorization: Bearer $FAKE_KEY" >/dev/null
    sed -i '$d' "$RESULTS"
    for _ in $(seq "$REPEAT"); do
        run_ttft ttft-direct llm "$FAKE_URL/chat/completions" "$DIRECT_BODY" --header "Authorization: Bearer $FAKE_KEY"
        direct=$TTFT_P50
        run_ttft ttft-assistant api "http://127.0.0.1:$PORT9/v1/orgs/$ORG1/assistant/chat" \
            "{\"message\": \"${QUESTIONS[0]}\"}" --header "Authorization: Bearer $TOKEN1"
        printf 'db\tassistant-overhead\t1\t%s\t-\t-\t-\n' "$(awk -v a="$TTFT_P50" -v d="$direct" 'BEGIN { printf "%.3f", a - d }')" >>"$RESULTS"
    done
    RETRIEVE_CLIENTS=${RETRIEVE_CLIENTS:-2}
    log "assistant: retrieval, org 1's 10,000 chunks alone (pgbench, $RETRIEVE_CLIENTS clients, ${DURATION}s, $REPEAT rounds)"
    explain_retrieve
    for _ in $(seq "$REPEAT"); do run_pgbench retrieve-alone "$RETRIEVE_SCRIPT" "$RETRIEVE_CLIENTS"; done
    log "assistant: 990,000 more chunks in 999 other orgs (same vocabulary)"
    seed_start=$(date +%s)
    psql_as postgres -v part=crowded -v words="$WORDS" -f "$ROOT/benches/assistant-seed.sql"
    echo "seeded in $(( $(date +%s) - seed_start )) s" >&2
    log "assistant: retrieval, org 1's 10,000 chunks among 1,000,000 of 1,000 orgs"
    explain_retrieve
    for _ in $(seq "$REPEAT"); do run_pgbench retrieve-crowded "$RETRIEVE_SCRIPT" "$RETRIEVE_CLIENTS"; done
fi

if wants connections; then
    HOLD=${HOLD_CONNECTIONS:-10000}
    rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
    log "memory: the server's RSS idle, under the list at 32 clients, holding $HOLD idle keep-alive connections (benches/connections.py)"
    printf 'mem\trss-idle\t1\t%s\n' "$(rss_of "$SERVER_PID")" >>"$RESULTS"
    # The peak RSS, sampled every 100 ms while the list runs at 32 clients.
    echo 0 >"$BENCH_DIR/rss-peak"
    ( peak=0; while kill -0 "$SERVER_PID" 2>/dev/null; do r=$(rss_of "$SERVER_PID"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$BENCH_DIR/rss-peak"; sleep 0.1; done ) &
    sampler=$!
    run_wrk list-rss 32 "$BASE" list.lua
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    printf 'mem\trss-load\t32\t%s\n' "$(cat "$BENCH_DIR/rss-peak")" >>"$RESULTS"
    # The first server runs with the default MAX_CONNECTIONS (10,000): hold $HOLD, then
    # 100 more, which it must refuse with 503 too_many_connections.
    out=$(python3 "$ROOT/benches/connections.py" "$BASE" --pid "$SERVER_PID" -n "$HOLD" --beyond 100) ||
        { echo "connections: $out" >&2; exit 1; }
    echo "  $out" >&2
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])
for name, clients, value in [("rss-before-hold", 1, r["rss_before_kb"]), ("rss-held", r["connections"], r["rss_holding_kb"]),
                             ("kb-per-connection", r["connections"], r["kb_per_connection"]), ("rss-after-close", 1, r["rss_after_close_kb"]),
                             ("beyond-refused", r["beyond"], r["beyond_refused_503"]), ("beyond-other", r["beyond"], r["beyond_other"]),
                             ("held-failed", r["connections"], r["failed"])]:
    print("mem\t%s\t%s\t%s" % (name, clients, value))' "$out" >>"$RESULTS"
fi

# --- report ----------------------------------------------------------------------
log "results ($ORGS orgs, $((ORGS * PER_ORG)) projects, ${DURATION}s per run, median of $REPEAT, $(nproc) cores shared)"
# The median-throughput run of each (side, route, clients), in first-seen order.
awk -F'\t' '{ k = $1 FS $2 FS $3; if (!(k in seen)) { seen[k] = ++n; order[n] = k } print seen[k] "\t" $0 }' "$RESULTS" |
    sort -t"$(printf '\t')" -k1,1n -k5,5g |
    awk -F'\t' '{ g[$1] = g[$1] ? g[$1] "\n" $0 : $0; c[$1]++ }
        END { for (i = 1; i in c; i++) { split(g[i], rows, "\n"); r = rows[int((c[i] + 1) / 2)]; sub(/^[0-9]+\t/, "", r); print r } }' \
    >"$RESULTS.median"
awk -F'\t' '
    { key = $2 "/" $3; if ($1 == "pgbench") { pg[key] = $4; pg50[key] = $5; pg99[key] = $6 }
      else if ($1 == "s3") { s3[key] = $4; s350[key] = $5; s399[key] = $6 }
      else if ($1 == "mem") { mem[key] = $4 }
      else if ($1 == "db") { db[key] = $4 }
      else { api[key] = $4; a50[key] = $5; a99[key] = $6; bad[key] = $7 } ; row[NR] = $0 }
    END {
        printf "%-8s %-20s %7s %12s %9s %9s %7s\n", "side", "route", "clients", "req/s", "p50 ms", "p99 ms", "errors"
        for (i = 1; i <= NR; i++) { split(row[i], f, "\t");
            printf "%-8s %-20s %7s %12.0f %9s %9s %7s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7] }
        print ""
        n = split("list/8 list/32 create/8 create/32", keys, " ")
        for (j = 1; j <= n; j++) { k = keys[j]; if ((k in api) && (k in pg))
            printf "%-12s api/pgbench: throughput %.2f, p50 %.2fx, p99 %.2fx\n", k, api[k] / pg[k], a50[k] / pg50[k], a99[k] / pg99[k] }
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32"); if ((("list-pipelined/" k) in pg) && (("list/" k) in api))
            printf "list/%-7s api/pgbench-pipelined (same wire shape as the server): throughput %.2f, p99 %.2fx\n", k, api["list/" k] / pg["list-pipelined/" k], a99["list/" k] / pg99["list-pipelined/" k] }
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32"); if ((("list-full/" k) in pg) && (("list/" k) in api))
            printf "list/%-7s api/pgbench-full (list.sql plus the limiter statement and the timeouts, each waited for): throughput %.2f, p99 %.2fx\n", k, api["list/" k] / pg["list-full/" k], a99["list/" k] / pg99["list-full/" k] }
        if (("list-bypass/32" in pg) && ("list/32" in pg))
            printf "isolation cost at 32 clients: bypass (no context, explicit filter) / rls = %.2f\n", pg["list-bypass/32"] / pg["list/32"]
        if (("list-bypass-context/32" in pg) && ("list/32" in pg))
            printf "policy cost at 32 clients: bypass with the context statement / rls = %.2f\n", pg["list-bypass-context/32"] / pg["list/32"]
        if ("health-under-login/4" in api) printf "/health p99 alone %s ms, while logins saturate hashing %s ms\n", a99["health-idle/4"], a99["health-under-login/4"]
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32");
            if ((("list-key/" k) in api) && (("list-jwt/" k) in api))
                printf "list/%-7s API key / JWT: throughput %.2f, p99 %.2fx\n", k, api["list-key/" k] / api["list-jwt/" k], a99["list-key/" k] / a99["list-jwt/" k]
            if ((("list-nolimits/" k) in api) && (("list-jwt/" k) in api))
                printf "list/%-7s rate limits on / off: throughput %.2f, p99 %.2fx\n", k, api["list-jwt/" k] / api["list-nolimits/" k], a99["list-jwt/" k] / a99["list-nolimits/" k] }
        if (("hot-key/32" in api) && ("keys-32/32" in api))
            printf "list/32      one hot key / 32 distinct keys: throughput %.2f, p99 %.2fx\n", api["hot-key/32"] / api["keys-32/32"], a99["hot-key/32"] / a99["keys-32/32"]
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32");
            if ((("list-metered/" k) in api) && (("list-nometer/" k) in api))
                printf "list/%-7s metering on / off: throughput %.2f, p99 %.2fx\n", k, api["list-metered/" k] / api["list-nometer/" k], a99["list-metered/" k] / a99["list-nometer/" k] }
        if (("ingest/8" in api) && ("ingest-raw/8" in pg))
            printf "ingest/8     1,000-event batches, api / unnest insert: throughput %.2f (%.0f vs %.0f events/s)\n", api["ingest/8"] / pg["ingest-raw/8"], api["ingest/8"] * 1000, pg["ingest-raw/8"] * 1000
        if (("usage-big/8" in api) && ("usage-small/8" in api))
            printf "usage/8      GET usage, org with many raw events / with 1,000: p99 %.2fx, throughput %.2f\n", a99["usage-big/8"] / a99["usage-small/8"], api["usage-big/8"] / api["usage-small/8"]
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32");
            if ((("append/" k) in api) && (("put-raw/" k) in s3))
                printf "append/%-5s 100 x 1 KB events, api / raw S3 PUT of the same bytes: throughput %.2f, p99 %.2fx\n", k, api["append/" k] / s3["put-raw/" k], a99["append/" k] / s399["put-raw/" k]
            if ((("read-paged/" k) in api) && (("get-raw/" k) in s3))
                printf "read/%-7s 10,000 events, api pages / raw S3 GETs: throughput %.2f, p99 %.2fx\n", k, api["read-paged/" k] / s3["get-raw/" k], a99["read-paged/" k] / s399["get-raw/" k] }
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32");
            if ((("create-audited/" k) in api) && (("create-unaudited/" k) in api))
                printf "create/%-5s with its audit row / without: throughput %.2f, p99 %.2fx\n", k, api["create-audited/" k] / api["create-unaudited/" k], a99["create-audited/" k] / a99["create-unaudited/" k] }
        if (("audit-big/8" in api) && ("audit-small/8" in api))
            printf "audit/8      newest page, org with many audit rows / with 10,000: p99 %.2fx, throughput %.2f\n", a99["audit-big/8"] / a99["audit-small/8"], api["audit-big/8"] / api["audit-small/8"]
        if (("webhook-new/200" in api) && ("webhook-replay/200" in api))
            printf "webhook/200  Stripe events at 200/s: ack p99 %s ms (p50 %s); redeliveries p99 %s ms (%.2fx); %.3f ms of database time per redelivery\n", a99["webhook-new/200"], a50["webhook-new/200"], a99["webhook-replay/200"], a99["webhook-replay/200"] / a99["webhook-new/200"], db["webhook-duplicate/1"]
        if (("webhook-new/200" in api) && ("webhook-receive/32" in pg))
            printf "webhook/200  api ack / pgbench -R 200 of the same transaction: p50 %.2fx, p99 %.2fx (pgbench p99 %s ms)\n", a50["webhook-new/200"] / pg50["webhook-receive/32"], a99["webhook-new/200"] / pg99["webhook-receive/32"], pg99["webhook-receive/32"]
        for (k in mem) if (k ~ /^sse-rss\//) { split(k, sk, "/");
            printf "sse          %s live tails at 100 events/s: delivery p50 %s ms, p99 %s ms; server RSS %.1f KB per tail\n", sk[2], a50["sse/" sk[2]], a99["sse/" sk[2]], mem[k] }
        for (j = 1; j <= 2; j++) { k = (j == 1 ? "8" : "32");
            if ((("list-metrics/" k) in api) && (("list-plain/" k) in api))
                printf "list/%-7s metrics recorded / not: throughput %.2f, p99 %.2fx\n", k, api["list-metrics/" k] / api["list-plain/" k], a99["list-metrics/" k] / a99["list-plain/" k]
            if ((("list-replica/" k) in api) && (("list-plain/" k) in api))
                printf "list/%-7s primary + 1 replica (same machine) / primary only: throughput %.2f, p99 %.2fx\n", k, api["list-replica/" k] / api["list-plain/" k], a99["list-replica/" k] / a99["list-plain/" k] }
        if (("ttft-direct/1" in api) && ("ttft-assistant/1" in api))
            printf "ttft         time to first token, the fake model direct: p50 %s ms, p99 %s ms; through the assistant: p50 %s ms, p99 %s ms\n", a50["ttft-direct/1"], a99["ttft-direct/1"], a50["ttft-assistant/1"], a99["ttft-assistant/1"]
        if ("assistant-overhead/1" in db)
            printf "assistant overhead p50: %.2f ms (median of the rounds; retrieval over 10,000 chunks included)\n", db["assistant-overhead/1"]
        for (k in pg) if (k ~ /^retrieve-alone\//) { split(k, rk, "/"); c = "retrieve-crowded/" rk[2]; if (c in pg)
            printf "retrieval    p99 with 10,000 chunks in the org alone: %s ms; among 1,000,000 chunks of 1,000 orgs: %s ms; ratio %.2f (p50 %s / %s ms, %s clients)\n", pg99[k], pg99[c], pg99[c] / pg99[k], pg50[k], pg50[c], rk[2] }
        if ("rss-idle/1" in mem) {
            for (k in mem) if (k ~ /^rss-held\//) { split(k, hk, "/"); held = hk[2] }
            printf "memory       server RSS idle %.1f MB; peak under the list at 32 clients %.1f MB; holding %s idle keep-alive connections %.1f MB (%.1f KB each); after closing them %.1f MB\n", mem["rss-idle/1"] / 1024, mem["rss-load/32"] / 1024, held, mem["rss-held/" held] / 1024, mem["kb-per-connection/" held], mem["rss-after-close/1"] / 1024
            for (k in mem) if (k ~ /^beyond-refused\//) { split(k, bk, "/");
                printf "connections  beyond MAX_CONNECTIONS: %s of %s refused with 503 too_many_connections (%s otherwise); %s of the held failed to open\n", mem[k], bk[2], mem["beyond-other/" bk[2]], mem["held-failed/" held] } }
        if ("list/32" in api && "list/32" in pg) printf "ratio api/pgbench at 32 clients: %.2f\n", api["list/32"] / pg["list/32"]
    }' "$RESULTS.median"
# The pairs once more, round by round: the i-th run of one side beside the i-th of the
# other (run in the same round), so a slow minute of a shared machine moves one pair's
# ratio, not the median of the pairs. Only with --repeat 3 or more.
awk -F'\t' -v repeat="$REPEAT" -v clients="$CLIENTS" '
    $1 == "api" || $1 == "pgbench" { k = ($1 == "pgbench" ? "pgbench:" : "") $2 "/" $3; n[k]++; v[k, n[k]] = $4 }
    function med(a, m,   i, j, t) { for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
    function pairs(label, x, y, clients,   kx, ky, m, i, r, lo, hi) {
        kx = x "/" clients; ky = y "/" clients; m = n[kx] < n[ky] ? n[kx] : n[ky]
        if (m < 3) return
        delete r; lo = 1e9; hi = 0
        for (i = 1; i <= m; i++) { r[i] = v[kx, i] / v[ky, i]; if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
        printf "%-12s %s, paired by round: median %.2f (%d pairs, %.2f-%.2f)\n", "paired/" clients, label, med(r, m), m, lo, hi }
    END { if (repeat < 3) exit
        nc = split(clients, cs, " ")
        for (j = 1; j <= nc; j++) { c = cs[j]
            pairs("API key / JWT", "list-key", "list-jwt", c)
            pairs("rate limits on / off", "list-jwt", "list-nolimits", c)
            pairs("metering on / off", "list-metered", "list-nometer", c)
            pairs("create with its audit row / without", "create-audited", "create-unaudited", c)
            pairs("metrics recorded / not", "list-metrics", "list-plain", c) }
        pairs("one hot key / 32 distinct keys", "hot-key", "keys-32", 32)
        pairs("ingestion, API / unnest insert (batches/s)", "ingest", "pgbench:ingest-raw", 8) }' "$RESULTS"
