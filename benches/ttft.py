#!/usr/bin/env python3
"""Time to first token of a streaming endpoint (server-sent events), sequentially.

    python3 benches/ttft.py URL --header 'Authorization: Bearer ...' \\
        --body '{"model": "m", "messages": [...], "stream": true}' -n 200

POSTs `--body` to URL `-n` times, one after the other over one keep-alive connection
(http.client; a new one when the server closes it), and times from sending the request
to the first line that carries content:

  - an `event: token` line (Palisade's own assistant stream), or
  - a `data:` line of an event without an `event:` type (OpenAI's format) that is not
    `[DONE]`, not a role-only chunk (empty `choices[0].delta.content`) and not a
    usage-only chunk (`choices: []`); data that is not JSON counts as content.

Each stream is read to its end. Prints one JSON line: requests, ok, errors (non-2xx
answers and broken connections), no_token (streams without content), and in ms the
p50/p90/p99/mean time to first token, and the mean time to the end of the stream.
Standard library only.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse


def percentile(sorted_values, p):
    """Nearest rank."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def carries_content(data: str) -> bool:
    payload = data.strip()
    if not payload or payload == "[DONE]":
        return False
    try:
        obj = json.loads(payload)
    except ValueError:
        return True
    if not isinstance(obj, dict):
        return True
    if "choices" in obj:
        choices = obj.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return False  # usage-only
        content = (choices[0].get("delta") or {}).get("content")
        return isinstance(content, str) and content != ""
    # Another format: anything but a usage block alone.
    return set(obj) - {"usage"} != set()


class Client:
    def __init__(self, url: str, timeout: float):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise SystemExit(f"ttft.py: {url}: http or https only")
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.timeout = timeout
        self.conn = None

    def connection(self):
        if self.conn is None:
            cls = (http.client.HTTPSConnection if self.scheme == "https"
                   else http.client.HTTPConnection)
            self.conn = cls(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def one(self, body: bytes, headers: dict):
        """(status, seconds to first token or None, seconds to end)."""
        conn = self.connection()
        start = time.perf_counter()
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        first = None
        if 200 <= resp.status < 300:
            event_type = None
            while True:
                line = resp.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text == "":
                    event_type = None  # the event ended
                    continue
                if first is not None or text.startswith(":"):
                    continue
                if text.startswith("event:"):
                    event_type = text[6:].strip()
                    if event_type == "token":
                        first = time.perf_counter() - start
                elif text.startswith("data:") and event_type is None:
                    if carries_content(text[5:]):
                        first = time.perf_counter() - start
        # Also after the lines: readline() at the end of a Content-Length body does not
        # release the connection for the next request, read() does.
        resp.read()
        end = time.perf_counter() - start
        if resp.will_close:
            self.close()
        return resp.status, first, end


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--header", action="append", default=[], metavar="'K: V'",
                    help="a request header (repeatable)")
    ap.add_argument("--body", required=True, help="the JSON body to POST")
    ap.add_argument("-n", type=int, default=200, help="requests (default 200)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per socket op")
    args = ap.parse_args()

    try:
        body = json.dumps(json.loads(args.body)).encode()
    except ValueError as e:
        raise SystemExit(f"ttft.py: --body is not JSON: {e}")
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"ttft.py: --header {h!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()

    client = Client(args.url, args.timeout)
    ttft, total = [], []
    errors = no_token = 0
    for _ in range(args.n):
        try:
            status, first, end = client.one(body, headers)
        except (OSError, http.client.HTTPException):
            errors += 1
            client.close()
            continue
        if not 200 <= status < 300:
            errors += 1
            continue
        total.append(end)
        if first is None:
            no_token += 1
        else:
            ttft.append(first)
    client.close()

    ttft.sort()
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    print(json.dumps({
        "requests": args.n,
        "ok": len(total),
        "errors": errors,
        "no_token": no_token,
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p90_ms": ms(percentile(ttft, 90)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "ttft_mean_ms": ms(sum(ttft) / len(ttft)) if ttft else None,
        "total_mean_ms": ms(sum(total) / len(total)) if total else None,
    }))
    return 0 if errors == 0 and no_token == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
