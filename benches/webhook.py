#!/usr/bin/env python3
"""Stripe webhook acknowledgements at a fixed rate (open loop), then redeliveries.

Sends `--rate` signed events a second for `--seconds` to POST /v1/billing/webhook (each
about one of the orgs listed in `--orgs`, so each is stored *and* audited in its org's
log), each at its scheduled time whatever the previous answers did (an open loop: a slow
answer shows as latency, not as a lower rate). Then redelivers `--replays` of the stored
events (Stripe retries and duplicates). Prints one tab-separated row per phase, as
benches/load.sh reads them: side, route, rate, achieved req/s, p50 ms, p99 ms, non-200s.

Standard library only: Stripe's signature is HMAC-SHA256 of "{t}.{body}".
"""

import argparse
import hashlib
import hmac
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse
import uuid


def signed(secret: str, body: bytes) -> str:
    t = str(int(time.time()))
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(org: str) -> bytes:
    # A type Palisade ignores when applying (so the worker stays out of the figures);
    # it is stored and audited like any other.
    return json.dumps({
        "id": f"evt_bench{uuid.uuid4().hex}",
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": {"id": f"cus_bench{uuid.uuid4().hex[:12]}", "object": "customer",
                            "metadata": {"org_id": org}}},
    }).encode()


def run(base: str, secret: str, bodies: list, rate: float, workers: int = 32):
    """Sends bodies at `rate` a second; returns (elapsed s, latencies ms, failures)."""
    url = urllib.parse.urlsplit(base)
    jobs: queue.Queue = queue.Queue()
    latencies, failures, lock = [], [0], threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        while True:
            item = jobs.get()
            if item is None:
                return
            due, body = item
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started = time.monotonic()
            try:
                conn.request("POST", "/v1/billing/webhook", body=body, headers={
                    "content-type": "application/json", "stripe-signature": signed(secret, body)})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                ok = False
            # From the scheduled time: a send that had to wait for a worker counts too.
            ms = (time.monotonic() - min(due, started)) * 1000
            with lock:
                latencies.append(ms)
                if not ok:
                    failures[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for th in threads:
        th.start()
    t0 = time.monotonic() + 0.2
    for i, body in enumerate(bodies):
        jobs.put((t0 + i / rate, body))
    for _ in threads:
        jobs.put(None)
    for th in threads:
        th.join()
    return time.monotonic() - t0, latencies, failures[0]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--orgs", required=True, help="a file of org ids, one per line")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--replays", type=int, default=1000)
    args = ap.parse_args()
    orgs = [line.strip() for line in open(args.orgs) if line.strip()]
    n = int(args.rate * args.seconds)
    bodies = [event(orgs[i % len(orgs)]) for i in range(n)]
    # Warm-up, not recorded: the client's connections and the server's prepared
    # statements, so the slowest percent is the server's steady state, not connecting.
    run(args.base, args.secret, [event(orgs[i % len(orgs)]) for i in range(int(args.rate * 2))], args.rate)
    for name, batch in (("webhook-new", bodies), ("webhook-replay", bodies[: args.replays])):
        elapsed, lat, bad = run(args.base, args.secret, batch, args.rate)
        print(f"api\t{name}\t{int(args.rate)}\t{len(batch) / elapsed:.1f}\t"
              f"{pct(lat, 50):.2f}\t{pct(lat, 99):.2f}\t{bad}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
