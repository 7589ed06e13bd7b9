#!/usr/bin/env python3
"""CPU per request: one load run, and the CPU time (user + system) it cost each process.

    benches/cpu-per-request.py --data-dir DIR --server-pid PID [--port 18080] [--proofkey HEX]
                               [--script FILE.sql] api|pg|pgp CLIENTS SECONDS

Against a server started by `benches/load.sh --keep` (or by hand) on DIR's cluster:
`api` runs wrk (benches/wrk/list.lua, DIR/tokens.txt), `pg` pgbench with benches/pgbench/list.sql,
`pgp` with list-pipelined.sql. Prints requests/s and CPU microseconds per request for the
PostgreSQL backends (live ones plus those the postmaster reaped), the server process, and the
load generator. Unlike req/s, these barely move when something else loads the machine.
"""
import argparse, glob, os, re, resource, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--data-dir", required=True)
ap.add_argument("--server-pid", required=True)
ap.add_argument("--port", default="18080")
ap.add_argument("--orgs", default="10000")
ap.add_argument("--proofkey", default=os.environ.get("PROOF_KEY", ""),
                help="the context proof key, hex (bench_tokens proof-key); pg and pgp need it")
ap.add_argument("--script", help="another load script: pgbench's for pg (default benches/pgbench/list.sql), "
                "wrk's for api (default benches/wrk/list.lua)")
ap.add_argument("kind", choices=["api", "pg", "pgp"])
ap.add_argument("clients")
ap.add_argument("seconds")
a = ap.parse_args()
sock = os.path.join(a.data_dir, "postgres")


def snapshot():
    postmaster = int(open(os.path.join(sock, "postmaster.pid")).readline())
    hz = os.sysconf("SC_CLK_TCK")
    pg = server = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        ppid, ut, st, cut, cst = (int(x) for x in (f[1], f[11], f[12], f[13], f[14]))
        if int(pid) == postmaster:
            pg += ut + st + cut + cst
        elif ppid == postmaster:
            pg += ut + st
        elif pid == a.server_pid:
            server += ut + st
    return pg / hz, server / hz


if a.kind == "api":
    env = dict(os.environ, TOKENS_FILE=os.path.join(a.data_dir, "tokens.txt"),
               KEYS_FILE=os.path.join(a.data_dir, "keys.txt"), WRK_DIR=f"{ROOT}/benches/wrk")
    cmd = ["wrk", "-t2", f"-c{a.clients}", f"-d{a.seconds}s", "-s", a.script or f"{ROOT}/benches/wrk/list.lua",
           f"http://127.0.0.1:{a.port}"]
else:
    env = os.environ
    script = a.script or f"{ROOT}/benches/pgbench/" + ("list.sql" if a.kind == "pg" else "list-pipelined.sql")
    pgbench = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))[-1]
    cmd = [pgbench, "-n", "-M", "prepared", "-h", sock, "-U", "palisade_app", "-c", a.clients, "-j", "2",
           "-T", a.seconds, "-D", f"orgs={a.orgs}", "-D", f"proofkey={a.proofkey}", "-f", script, "palisade"]
before, r0 = snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp", check=True).stdout
after, r1 = snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
if a.kind == "api":
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
else:
    n = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    rate = float(re.search(r"tps = ([\d.]+)", out).group(1))
client = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
us = lambda seconds: 1e6 * seconds / n
pg, server = after[0] - before[0], after[1] - before[1]
print(f"{a.kind:4} c{a.clients}: {rate:7.0f}/s  CPU per request: postgres {us(pg):4.0f} us  "
      f"server {us(server):4.0f} us  client {us(client):3.0f} us  total {us(pg + server + client):4.0f} us")
