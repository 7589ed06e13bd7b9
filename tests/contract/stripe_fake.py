#!/usr/bin/env python3
"""A minimal Stripe for the contract run: the calls Palisade makes, in Stripe's wire format
(form-encoded POSTs with a Bearer secret key, JSON answers, Stripe's error shape), so
schemathesis exercises the billing operations end to end instead of meeting
503 billing_not_configured. Standard library only. Usage: stripe_fake.py PORT SECRET_KEY
(the fuller fake the test suite drives is tests/api/stripe_fake.rs)."""

import itertools
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, KEY = int(sys.argv[1]), sys.argv[2]
ids = itertools.count(1)
lock = threading.Lock()
customers, idempotency = {}, {}


def new_id(prefix):
    return f"{prefix}_contract{next(ids):08d}"


class Stripe(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        self.answer(status, {"error": {"type": "invalid_request_error", "message": message}})

    def authorized(self):
        if self.headers.get("authorization") != f"Bearer {KEY}":
            self.error(401, "Invalid API Key provided")
            return False
        return True

    def do_GET(self):
        if self.authorized():
            self.error(404, "No such subscription")

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        if not self.authorized():
            return
        with lock:
            if self.path == "/v1/customers":
                key = self.headers.get("idempotency-key")
                if key not in idempotency:
                    cid = new_id("cus")
                    customers[cid] = {"id": cid, "object": "customer", "name": form.get("name")}
                    idempotency[key] = customers[cid]
                return self.answer(200, idempotency[key])
            if self.path == "/v1/checkout/sessions":
                if form.get("customer") not in customers:
                    return self.error(400, "No such customer")
                sid = new_id("cs")
                return self.answer(200, {"id": sid, "object": "checkout.session",
                                         "mode": form.get("mode"),
                                         "url": f"https://checkout.stripe.test/c/pay/{sid}",
                                         "expires_at": int(time.time()) + 86400})
            if self.path == "/v1/billing_portal/sessions":
                if form.get("customer") not in customers:
                    return self.error(400, "No such customer")
                pid = new_id("bps")
                return self.answer(200, {"id": pid, "object": "billing_portal.session",
                                         "url": f"https://billing.stripe.test/p/session/{pid}"})
        self.error(404, "Unrecognized request URL")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Stripe).serve_forever()
