#!/usr/bin/env python3
"""Holds many idle keep-alive connections to a Palisade server and reports its memory.

    benches/connections.py http://127.0.0.1:8080 --pid PID [-n 10000] [--beyond 100]

Opens N connections over loopback (in batches), sends one GET /health on each and keeps
it open, idle; reads the server's RSS (/proc/PID/status) before, while all are held, and
after they are closed. Then, still holding them, opens --beyond more: a server whose
MAX_CONNECTIONS is N answers each with 503 too_many_connections. Prints one JSON object.
Bounded: everything stops after --timeout seconds (default 180), and every connection is
closed on exit.
"""

import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlparse

REQUEST = b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def answer(reader):
    """Reads one response; returns (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    body = await reader.readexactly(length)
    return status, body


async def one(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(REQUEST)
    status, body = await answer(reader)
    return reader, writer, status, body


async def run(args):
    url = urlparse(args.url)
    host, port = url.hostname, url.port or 80
    # Let the settle after the previous bench phase be seen in the baseline.
    await asyncio.sleep(1)
    before = rss_kb(args.pid)
    held, failed = [], 0
    started = time.monotonic()
    for start in range(0, args.n, args.batch):
        batch = [one(host, port) for _ in range(start, min(args.n, start + args.batch))]
        for r in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(r, BaseException) or r[2] != 200:
                failed += 1
                if not isinstance(r, BaseException):
                    r[1].close()
            else:
                held.append(r)
    opened_s = time.monotonic() - started
    await asyncio.sleep(1)
    holding = rss_kb(args.pid)
    # Still holding them: connections beyond the cap.
    refused = other = 0
    for r in await asyncio.gather(*[one(host, port) for _ in range(args.beyond)],
                                  return_exceptions=True):
        if isinstance(r, BaseException):
            other += 1
            continue
        r[1].close()
        try:
            code = json.loads(r[3]).get("code")
        except ValueError:
            code = None
        if r[2] == 503 and code == "too_many_connections":
            refused += 1
        else:
            other += 1
    # The held connections still answer.
    alive = 0
    for reader, writer, _, _ in held[:: max(1, len(held) // 100)]:
        writer.write(REQUEST)
        status, _ = await answer(reader)
        alive += status == 200
    for _, writer, _, _ in held:
        writer.close()
    await asyncio.sleep(2)
    after = rss_kb(args.pid)
    return {
        "connections": len(held),
        "failed": failed,
        "open_seconds": round(opened_s, 2),
        "rss_before_kb": before,
        "rss_holding_kb": holding,
        "rss_after_close_kb": after,
        "kb_per_connection": round((holding - before) / max(1, len(held)), 2),
        "beyond": args.beyond,
        "beyond_refused_503": refused,
        "beyond_other": other,
        "held_still_answer": alive,
        "held_sampled": len(held[:: max(1, len(held) // 100)]),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--beyond", type=int, default=100)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--timeout", type=float, default=180)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n + args.beyond + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
        if min(hard, need) < need:
            sys.exit(f"open-files hard limit {hard} is below the {need} this needs")
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        sys.exit(f"gave up after {args.timeout} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
