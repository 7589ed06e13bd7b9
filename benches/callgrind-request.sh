#!/usr/bin/env bash
# The instructions one request costs, with a session (JWT) and with an API key: the list
# of 20 projects, as benches/load.sh's "keys" rows send it. Counted by valgrind's
# callgrind, so the figures repeat to a fraction of a percent whatever else the machine is
# doing -- where req/s ratios on a shared 2-core box swing by 20 %.
#
#   JWT_SECRET=s PALISADE_MASTER_KEY=m benches/callgrind-request.sh BENCH_DIR [N]
#   JWT_SECRET=s PALISADE_MASTER_KEY=m benches/callgrind-request.sh BENCH_DIR [N] ingest
#
# `ingest` (a dataset kept by `load.sh --routes metering --keep`) counts a 1,000-event
# usage batch instead: PostgreSQL running app.ingest_usage_events() in a session's context
# (the arrays built in SQL) vs the raw `insert ... select from unnest(...)` of
# benches/pgbench/ingest-raw.sql, and the server receiving the batch as ingest.lua sends
# it; N (default 10) batches per measurement.
#
# BENCH_DIR: a dataset kept by `JWT_SECRET=s PALISADE_MASTER_KEY=m benches/load.sh --keep`
# (a session and a key per org), its server stopped, and the same two secrets here (load.sh
# makes up random ones when they are not set, and keeps them nowhere). N (default 200):
# requests per measurement. The sessions' access tokens are minted afresh (the kept ones
# expire after 12 hours).
#
# 1. PostgreSQL: a single-user backend runs the request's statements as the server does
#    (the limiter statement in its own transaction; the context statement and the list in
#    the next), N and then 2N times after a warm-up of 50; (2N run - N run) / N is the
#    request, the backend's start and first reads cancelled out. Also each statement alone.
# 2. The server: the release server under callgrind on the same dataset, N sequential
#    keep-alive requests of each kind, twice each, alternating, counters dumped between.
# Requests go to the orgs in a fixed order (1 + 7919 i mod the orgs): every run the same.
#
# Prints instructions per request for each, and the ratios session / key: at or above
# 1.00 a key's request costs no more than a session's. The dataset keeps what serving
# requests leaves (limiter buckets, metered calls, keys' last use) and is migrated by the
# server if it is older than the code.
set -euo pipefail
shopt -s inherit_errexit

DIR=${1:?usage: JWT_SECRET=... PALISADE_MASTER_KEY=... benches/callgrind-request.sh BENCH_DIR [N] [list|ingest]}
ROUTE=${3:-list}
[ "$ROUTE" = list ] || [ "$ROUTE" = ingest ] || { echo "route: list or ingest" >&2; exit 1; }
N=${2:-$([ "$ROUTE" = ingest ] && echo 10 || echo 200)}
: "${JWT_SECRET:?the bench's JWT_SECRET}" "${PALISADE_MASTER_KEY:?the bench's PALISADE_MASTER_KEY}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-18080}
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -gt 0 ] || { echo "N: a positive number" >&2; exit 1; }
if ! command -v valgrind >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
fi
DATA=$DIR/postgres
[ -f "$DATA/PG_VERSION" ] || { echo "$DATA is not a cluster (keep one with benches/load.sh --keep)" >&2; exit 1; }
PG_BIN=/usr/lib/postgresql/$(cat "$DATA/PG_VERSION")/bin
[ -x "$PG_BIN/postgres" ] || { echo "no PostgreSQL $(cat "$DATA/PG_VERSION") binaries in $PG_BIN" >&2; exit 1; }
ORGS=$(wc -l <"$DIR/keys.txt")
[ ! -f "$DATA/postmaster.pid" ] || { echo "$DATA is running: stop its server first" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin palisade --example bench_tokens)
PROOF_KEY=$("$ROOT/target/release/examples/bench_tokens" proof-key)
OWNER=$(stat -c %U "$DATA")
[ "$(id -u)" -eq 0 ] || [ "$OWNER" = "$(id -un)" ] ||
    { echo "$DATA belongs to $OWNER: run this as $OWNER or as root" >&2; exit 1; }
WORK=$(mktemp -d /tmp/callgrind-request.XXXXXX)
chmod 755 "$WORK"

as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$OWNER" -- "$@"; else "$@"; fi; }
backend() { as_owner "$PG_BIN/postgres" --single -D "$DATA" palisade; }
failed() { grep -E 'ERROR|FATAL|PANIC' "$1" >&2; }
drop_schema() { echo "drop schema if exists callgrind_bench cascade;" | backend >/dev/null 2>&1 || true; }
trap 'drop_schema; rm -rf "$WORK"' EXIT

# The keys the bench made, in a table the backend can read (dropped again at the end).
cp "$DIR/keys.txt" "$WORK/keys.txt"
chmod 644 "$WORK/keys.txt"
printf '%s\n' "create schema if not exists callgrind_bench;" \
    "drop table if exists callgrind_bench.keys;" \
    "create table callgrind_bench.keys (org uuid, secret text);" \
    "copy callgrind_bench.keys from '$WORK/keys.txt' with (delimiter ' ');" \
    "grant usage on schema callgrind_bench to palisade_app;" \
    "grant select on callgrind_bench.keys to palisade_app;" | backend >"$WORK/setup.log" 2>&1
! failed "$WORK/setup.log" || exit 1

# One line per statement: the single-user backend ends a command at a newline.
LIMIT=1000000000
if [ "$ROUTE" = ingest ]; then
cat >"$WORK/setup.sql" <<SQL
create temp table a as select array_agg(('0000000c-0000-4000-8000-' || (100000000000 + g))::uuid order by g) sids, array_agg(public.hmac(uuid_send(('0000000c-0000-4000-8000-' || (100000000000 + g))::uuid), decode('$PROOF_KEY', 'hex'), 'sha256') order by g) proofs, array_agg(('0000000a-0000-4000-8000-' || (100000000000 + g))::uuid order by g) orgs from generate_series(1, $ORGS) g;
grant select on a to palisade_app, palisade_owner;
create procedure pg_temp.run(f text, n int) language plpgsql as \$\$ declare s uuid[]; p bytea[]; o uuid[]; j int; tag text := f || '-' || n || '-' || clock_timestamp(); begin select sids, proofs, orgs into s, p, o from a; commit; for i in 1..n loop j := 1 + (i * 7919) % $ORGS; if f = 'raw' then insert into app.usage_events (org_id, event_id, meter_key, value, subject, occurred_at, period) select o[j], e.id, 'tokens', e.v, e.s, now(), date_trunc('month', now() at time zone 'UTC')::date from unnest(array(select tag || '-' || i || '-' || g from generate_series(1, 1000) g), array(select (g % 97)::numeric from generate_series(1, 1000) g), array(select 'c' || (g % 13) from generate_series(1, 1000) g)) as e(id, v, s) on conflict do nothing; else perform app.set_request_context(s[j], p[j], o[j]); perform * from app.ingest_usage_events(array(select tag || '-' || i || '-' || g from generate_series(1, 1000) g), array_fill('tokens'::text, array[1000]), array(select (g % 97)::numeric from generate_series(1, 1000) g), array(select 'c' || (g % 13) from generate_series(1, 1000) g), array_fill(now(), array[1000]), array_fill(null::jsonb, array[1000])); end if; commit; end loop; end \$\$;
SQL
else
cat >"$WORK/setup.sql" <<SQL
create temp table a as select array_agg(('0000000c-0000-4000-8000-' || (100000000000 + g))::uuid order by g) sids, array_agg(public.hmac(uuid_send(('0000000c-0000-4000-8000-' || (100000000000 + g))::uuid), decode('$PROOF_KEY', 'hex'), 'sha256') order by g) proofs, array_agg(('0000000a-0000-4000-8000-' || (100000000000 + g))::uuid order by g) orgs, array_agg(k.secret order by g) secrets from generate_series(1, $ORGS) g join callgrind_bench.keys k on k.org = ('0000000a-0000-4000-8000-' || (100000000000 + g))::uuid;
grant select on a to palisade_app;
create procedure pg_temp.run(f text, n int) language plpgsql as \$\$ declare s uuid[]; p bytea[]; o uuid[]; k text[]; j int; begin select sids, proofs, orgs, secrets into s, p, o, k from a; commit; for i in 1..n loop j := 1 + (i * 7919) % $ORGS; if f in ('session', 'session limiter') then perform app.rate_limit_session(s[j], p[j], o[j], $LIMIT, 60, true); commit; end if; if f in ('key', 'key limiter') then perform app.rate_limit_api_key(k[j], $LIMIT, 60, true); commit; end if; if f in ('session', 'session context') then perform app.set_request_context(s[j], p[j], o[j]); end if; if f in ('key', 'key context') then perform app.set_api_key_context(k[j], o[j]); end if; if f in ('session', 'key') then perform count(*) from (select id, org_id, name, description, access, created_at, updated_at from app.projects order by created_at, id limit 21) x; end if; commit; end loop; end \$\$;
SQL
fi

count() { # kind n -> instructions of the whole backend
    local role=palisade_app warm=50
    [ "$1" = raw ] && role=palisade_owner # as pgbench runs ingest-raw.sql
    [ "$ROUTE" = ingest ] && warm=5
    { cat "$WORK/setup.sql"; echo "set role $role;"; echo "call pg_temp.run('$1', $warm);"; echo "call pg_temp.run('$1', $2);"; } |
        as_owner valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PG_BIN/postgres" --single -D "$DATA" palisade \
            >"$WORK/run.log" 2>&1
    ! failed "$WORK/run.log" || exit 1
    local n
    n=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$WORK/run.log")
    [[ $n =~ ^[0-9]+$ ]] || { tail -5 "$WORK/run.log" >&2; exit 1; }
    echo "$n"
}
per_request() { local a b; a=$(count "$1" "$N"); b=$(count "$1" $((2 * N))); echo $(((b - a) / N)); }

declare -A ir
kinds=("session" "key" "session limiter" "key limiter" "session context" "key context")
[ "$ROUTE" = ingest ] && kinds=("raw" "ingest")
for kind in "${kinds[@]}"; do
    ir[$kind]=$(per_request "$kind")
    printf 'postgres %-16s %9d instructions per %s\n' "$kind" "${ir[$kind]}" "$([ "$ROUTE" = ingest ] && echo batch || echo request)" >&2
done
drop_schema
trap 'rm -rf "$WORK"' EXIT
"$ROOT/target/release/examples/bench_tokens" tokens "$ORGS" >"$WORK/tokens.txt"

# The server, on the same dataset (it starts the cluster). vgdb (callgrind_control) finds
# the process by USER and HOST.
export USER=${USER:-$(id -un)} HOST=127.0.0.1
PALISADE_DATA_DIR=$DIR PORT=$PORT RUST_LOG=warn RATE_LIMIT_API_KEY=1000000000 \
    RATE_LIMIT_USER=1000000000 RATE_LIMIT_IP=1000000000 \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/server.cg" \
    "$ROOT/target/release/palisade" serve 2>"$WORK/server.log" &
SERVER=$!
stop_server() {
    kill -TERM $SERVER 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 $SERVER 2>/dev/null || break; sleep 0.5; done
    kill -KILL $SERVER 2>/dev/null || true
    # The server stops its cluster on SIGTERM; make sure, even if it crashed.
    [ ! -f "$DATA/postmaster.pid" ] || as_owner "$PG_BIN/pg_ctl" stop -m fast -D "$DATA" >/dev/null 2>&1 || true
}
trap 'stop_server; rm -rf "$WORK"' EXIT
for i in $(seq 1 240); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    kill -0 $SERVER 2>/dev/null || { tail -20 "$WORK/server.log" >&2; exit 1; }
    [ "$i" -eq 240 ] && { echo "server not ready" >&2; exit 1; }
    sleep 0.5
done
send() { # kind n: n sequential keep-alive GETs of the list (or POSTs of a 1,000-event batch)
    python3 - "$DIR/keys.txt" "$WORK/tokens.txt" "$PORT" "$1" "$2" <<'PY'
import datetime, http.client, sys, time
keys, tokens, port, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rows = [l.split() for l in open(keys if kind == "key" else tokens)]
c = http.client.HTTPConnection("127.0.0.1", port)
ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
tag = f"cg-{time.time_ns()}"
for i in range(1, n + 1):
    org, cred = rows[(i * 7919) % len(rows)]
    if kind == "ingest":  # the body benches/wrk/ingest.lua sends
        body = '{"events":[' + ",".join(
            f'{{"id":"{tag}-{i}-{e}","meter":"tokens","value":{e % 97},"subject":"c{e % 13}","timestamp":"{ts}"}}'
            for e in range(1, 1001)) + ']}'
        c.request("POST", f"/v1/orgs/{org}/usage-events", body=body,
                  headers={"Authorization": "Bearer " + cred, "Content-Type": "application/json"})
    else:
        c.request("GET", f"/v1/orgs/{org}/projects?limit=20",
                  headers={"X-API-Key": cred} if kind == "key" else {"Authorization": "Bearer " + cred})
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"{kind}: HTTP {r.status}")
PY
}
served=(session key)
[ "$ROUTE" = ingest ] && served=(ingest)
for kind in "${served[@]}"; do send "$kind" "$([ "$ROUTE" = ingest ] && echo 3 || echo 50)"; done
callgrind_control -z $SERVER >/dev/null 2>&1
dump=0
declare -A sv
for kind in "${served[@]}" "${served[@]}"; do
    send "$kind" "$N"
    callgrind_control -d $SERVER >/dev/null 2>&1
    dump=$((dump + 1))
    for _ in $(seq 1 50); do [ -s "$WORK/server.cg.$dump" ] && break; sleep 0.1; done
    t=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/server.cg.$dump")
    sv[$kind]=$(( ${sv[$kind]:-0} + t / N ))
done
for kind in "${served[@]}"; do
    sv[$kind]=$(( sv[$kind] / 2 ))
    printf 'server   %-16s %9d instructions per %s\n' "$kind" "${sv[$kind]}" "$([ "$ROUTE" = ingest ] && echo batch || echo request)" >&2
done

if [ "$ROUTE" = ingest ]; then
    awk -v raw="${ir[raw]}" -v pg="${ir[ingest]}" -v sv="${sv[ingest]}" 'BEGIN {
        printf "instructions per 1,000-event batch: raw insert / the function %.3f, raw insert / (the function + the server) %.3f\n",
            raw / pg, raw / (pg + sv) }'
    exit 0
fi

awk -v r1="${ir[session]}" -v r2="${ir[key]}" -v l1="${ir[session limiter]}" -v l2="${ir[key limiter]}" \
    -v c1="${ir[session context]}" -v c2="${ir[key context]}" -v s1="${sv[session]}" -v s2="${sv[key]}" 'BEGIN {
    printf "instructions per request, session / key: postgres %.3f (limiter %.3f, context %.3f), server %.3f, both %.3f\n",
        r1 / r2, l1 / l2, c1 / c2, s1 / s2, (r1 + s1) / (r2 + s2) }'
