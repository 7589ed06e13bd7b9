#!/usr/bin/env python3
"""A fake OpenAI-compatible model for benchmarks: POST /v1/chat/completions.

The same wire format and answers as the fake the Rust tests use (tests/api/llm_fake.rs):
the answer is "Answer:" and the first 8 words of the last user message, one chunk per
word. With "stream": true it answers server-sent events, `data: {chunk json}\\n\\n` per
chunk (a role chunk, one per word, a finish chunk), a usage chunk when
"stream_options": {"include_usage": true}, then `data: [DONE]\\n\\n`; otherwise one
chat.completion JSON. usage.prompt_tokens counts the whitespace-separated words of all
messages, completion_tokens the word chunks. Requires `Authorization: Bearer <--key>`
(OpenAI's 401 error otherwise).

    python3 benches/llm_fake.py --port 0 --key sk-bench --delay-ms 200

Prints the port it listens on (one line) once ready. Standard library only.
"""

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer_words(messages):
    last_user = ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            last_user = m.get("content") if isinstance(m.get("content"), str) else ""
            break
    return ["Answer:"] + [" " + w for w in last_user.split()[:8]]


def prompt_tokens(messages):
    return sum(
        len(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams
    server_version = "llm-fake/1"
    key = ""
    delay = 0.0
    counter = 0
    lock = threading.Lock()

    def setup(self):
        super().setup()
        # Each chunk is a small write: without this, Nagle's algorithm and the client's
        # delayed ACK hold the second write back ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # quiet
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, code=None):
        self.send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                          "param": None, "code": code}})

    def chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        self.error(404, "Unknown request URL")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/v1/chat/completions":
            return self.error(404, "Unknown request URL")
        auth = self.headers.get("Authorization") or ""
        if auth != f"Bearer {self.key}":
            given = auth.removeprefix("Bearer ")
            message = (f"Incorrect API key provided: {given}." if given
                       else "You didn't provide an API key.")
            return self.error(401, message, "invalid_api_key")
        try:
            req = json.loads(raw)
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.")
        model, messages = req.get("model"), req.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list):
            return self.error(400, "'model' and 'messages' are required")
        words = answer_words(messages)
        pt = prompt_tokens(messages)
        usage = {"prompt_tokens": pt, "completion_tokens": len(words),
                 "total_tokens": pt + len(words)}
        with self.lock:
            Handler.counter += 1
            cid = f"chatcmpl-fake{Handler.counter}"
        created = int(time.time())
        if self.delay:
            time.sleep(self.delay)
        if req.get("stream") is not True:
            return self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(words)}}],
                "usage": usage,
            })
        include_usage = (req.get("stream_options") or {}).get("include_usage") is True

        def event(delta, finish):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": model, "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return b"data: " + json.dumps(c).encode() + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.chunk(event({"role": "assistant", "content": ""}, None))
            for w in words:
                self.chunk(event({"content": w}, None))
            self.chunk(event({}, "stop"))
            if include_usage:
                self.chunk(b"data: " + json.dumps({
                    "id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_fake", "choices": [],
                    "usage": usage}).encode() + b"\n\n")
            self.chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancel)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--key", default="sk-fake-llm-bench", help="the Bearer key required")
    ap.add_argument("--delay-ms", type=float, default=0.0,
                    help="wait this long before answering (before the first chunk)")
    args = ap.parse_args()
    Handler.key = args.key
    Handler.delay = args.delay_ms / 1000.0
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
