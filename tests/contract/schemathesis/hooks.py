"""Schemathesis hooks for Palisade (loaded through SCHEMATHESIS_HOOKS by ../run.sh).

- Two tenants, A and B: fresh accounts registered at start-up (unique emails), each with
  its personal organization. Every generated request runs as A.
- Authentication: an auth provider that signs A in with POST /v1/auth/login. Schemathesis
  re-authenticates on any 401 (the request is replayed once with the new token), so
  operations that end the current session (logout, session revocation) do not blind the
  rest of the run; tokens are also renewed every REFRESH_SECONDS.
- Login throttle (10 failures per account / 100 per IP in 15 min): fuzzing the login
  operation soon exhausts the per-IP budget of 127.0.0.1. The harness's own sign-ins
  (A, B) therefore come from another loopback address (PALISADE_AUTH_SOURCE_IP,
  default 127.0.0.2) and always use the right password, so they are never throttled.
- Per-account throttle: schemathesis reuses values it saw in responses, A's email among
  them; in an unauthenticated request (sign-in) with a wrong password that would count
  against A's account and lock the harness out after 10. So in requests to operations
  without security, A's and B's emails are replaced by a third account's (the decoy).
  Should A still be throttled, the auth provider keeps A's session going by refreshing.
- `org_id` path parameters: a syntactically valid UUID that A has never seen in a response
  (i.e. a random one) is replaced with A's personal organization (which cannot be deleted,
  so the run stays stable); ids learned from responses (an org created in the stateful
  phase) and invalid strings (negative tests) are kept.
- Check `cross_tenant_isolation`: every 2xx response to a request made with A's token, on
  an operation that declares security, is replayed with B's token. It fails when B gets a
  2xx for a request that names an object only A has seen (an id in the path, query or
  body), or when B's 2xx body contains A's email or an id only A has seen.
  On an operation that also takes an API key (a security requirement of an `apiKey`
  scheme in a header, e.g. apiKeyAuth's X-API-Key), the request is replayed a second time
  with an API key of B's personal organization (role admin, created at start-up and
  checked to work there) in that header and no Authorization header. Where the request
  names an object only A has seen, B's key must get 401, 403 or 404; and like the token
  replay, a 2xx must not show A's ids or email. A key that stops working (401
  api_key_*) is replaced once and the replay retried, so a dead key cannot pass vacuously.
  Positive control: PALISADE_XTENANT_CONTROL=1 replays as A instead of B (A's token, and
  a key of A's personal organization), so the check must then fail on every
  tenant-scoped operation (proves it is not trivially passing).
- Rejections that no schema can express are not failures of positive_data_acceptance
  (ST202): a 400/422 whose problem `code` (and, for 422, every `errors[].code`) is in
  SEMANTIC_CODES (default: a common password `too_common`, an unknown opaque `cursor`
  `invalid_cursor`, an unknown emailed token `token_invalid`, a date-time that must be in
  the future, e.g. an API key's `expires_at`, `in_the_past`; a day the calendar lacks,
  2026-02-30, `invalid_date`; a usage range from after to or over 366 days, `invalid_range`;
  a usage report for a month not begun, `period_not_started`; a plan this server's
  Stripe configuration does not sell, `unknown_plan`; a Stripe webhook whose
  HMAC signature does not match the body, `invalid_signature`; an `llm_base_url` that no
  pattern can judge, e.g. without a host, `invalid_url`; a NUL character (U+0000) inside
  free-form JSON such as `mcp_config`, which PostgreSQL cannot store, `invalid_text`). Override with
  PALISADE_ST_SEMANTIC_CODES (comma-separated; empty to keep every such failure).
- An ST201 for a multipart/form-data case whose sent parts are all declared and include
  every required one (schemathesis serialized its renamed or dropped part back into a
  valid form) is dropped and counted.
- Tenant emails in any request body (not only unauthenticated ones) are replaced by the
  decoy's: responses (the audit log's actor names) carry A's email into stored data.
- A `type` violation inside a multipart/form-data body that the server accepted (ST201:
  an object where a string part belongs is sent as its JSON text, a valid string no
  server can tell apart), and the rejection of a "positive" multipart case carrying a
  None (sent as `null`) in a non-nullable part (ST202), are dropped and counted; so is an
  ST201 that schemathesis itself labels "Invalid component: positive test case" (its
  stateful phase refilled the mutated field from a link: the request it sent was valid).
- A value-level ST201 on a multipart/form-data case (schemathesis broke one text part,
  e.g. appended "*" to break a `pattern`) is dropped and counted when the broken value
  still satisfies that part's own schema: schemathesis judges the body with its binary
  parts stripped to "", so the file part's `minLength: 1` made any such body "invalid".
- Every operation's status codes are recorded to $PALISADE_CONTRACT_REPORT/operations.json,
  which ../coverage.py compares with the spec (so a new route is covered, and checked to
  be covered, without editing this file).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

# CPython 3.11.7's ast.parse can raise SystemError ("AST constructor recursion depth
# mismatch") on a large source file; hypothesis hits it when it describes a lambda of
# schemathesis's own coverage module, and the operation then ends in a runtime error
# that says nothing about the API. A description is cosmetic: fall back to "lambda".
try:
    from hypothesis.internal import lambda_sources as _lambda_sources

    _describe = _lambda_sources._lambda_description

    def _safe_lambda_description(f, *args, **kwargs):
        try:
            return _describe(f, *args, **kwargs)
        except SystemError:
            return "lambda"

    _lambda_sources._lambda_description = _safe_lambda_description
except (ImportError, AttributeError):  # another hypothesis: nothing to guard
    pass

import jsonschema_rs
import requests
import schemathesis

BASE_URL = os.environ["PALISADE_URL"].rstrip("/")
AUTH_SOURCE_IP = os.environ.get("PALISADE_AUTH_SOURCE_IP", "127.0.0.2")
REPORT_DIR = os.environ.get("PALISADE_CONTRACT_REPORT", ".")
REFRESH_SECONDS = int(os.environ.get("PALISADE_AUTH_REFRESH_SECONDS", "120"))
XTENANT_CONTROL = os.environ.get("PALISADE_XTENANT_CONTROL") == "1"
SEMANTIC_CODES = {
    c.strip()
    for c in os.environ.get(
        "PALISADE_ST_SEMANTIC_CODES",
        "too_common,invalid_cursor,token_invalid,in_the_past,invalid_date,invalid_range,period_not_started,"
        "unknown_plan,invalid_signature,invalid_url,invalid_text",
    ).split(",")
    if c.strip()
}

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# ------------------------------------------------------------------------------ HTTP helpers


def _http(
    method: str, path: str, body: Any = None, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request from AUTH_SOURCE_IP (not throttled by the fuzzing of /v1/auth/login)."""
    url = urlsplit(BASE_URL)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30, source_address=(AUTH_SOURCE_IP, 0))
    headers = {"accept": "application/json", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        status = resp.status
    finally:
        conn.close()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def uuids_in(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = json.dumps(value)
    return {u.lower() for u in UUID_RE.findall(value)}


# ------------------------------------------------------------------------------ tenants


class Tenant:
    def __init__(self, label: str) -> None:
        self.label = label
        self.email = f"st-{label.lower()}-{uuid.uuid4().hex[:12]}@example.com"
        self.password = f"contract {secrets.token_urlsafe(18)}"
        self.lock = threading.Lock()
        self.tokens: set[str] = set()
        self.token: str | None = None
        self.refresh_token: str | None = None
        self.user_id = ""
        self.personal_org_id = ""
        # Every id seen in this tenant's 2xx responses.
        self.seen: set[str] = set()
        # An API key of the personal organization (for the key replays), and its lock
        # (not self.lock: making one signs in when needed).
        self.key_lock = threading.Lock()
        self.api_key: str | None = None
        self.api_keys_made = 0

    def register(self) -> None:
        status, body = _http(
            "POST", "/v1/auth/register", {"email": self.email, "password": self.password, "name": f"Tenant {self.label}"}
        )
        if status != 201:
            raise RuntimeError(f"registering tenant {self.label} failed: {status} {body}")
        self.user_id = body["user"]["id"]
        self.personal_org_id = body["user"]["current_org_id"]
        self.seen |= uuids_in(body)

    def _take(self, body: dict) -> str:
        self.token = body["access_token"]
        self.refresh_token = body["refresh_token"]
        self.tokens.add(self.token)
        return self.token

    def login(self) -> str:
        with self.lock:
            for attempt in range(5):
                status, body = _http("POST", "/v1/auth/login", {"email": self.email, "password": self.password})
                if status == 200:
                    return self._take(body)
                if status == 429 and self.refresh_token:
                    # Throttled (should not happen: see SHIELDED): keep the session going instead.
                    r_status, r_body = _http("POST", "/v1/auth/refresh", {"refresh_token": self.refresh_token})
                    if r_status == 200:
                        return self._take(r_body)
                if status in (429, 503):  # throttled or hasher saturated: wait a little, then retry
                    time.sleep(min(5.0, 0.5 * (attempt + 1)))
                    continue
                break
            raise RuntimeError(f"tenant {self.label} cannot sign in: {status} {body}")

    def current(self) -> str:
        return self.token or self.login()

    def new_api_key(self, header: str = "X-API-Key", stale: str | None = None) -> str:
        """A new admin API key of the personal organization, checked to work there.

        `stale`: the key a replay found dead; if another thread already replaced it, that
        replacement is returned instead of making another.
        """
        with self.key_lock:
            if self.api_key and self.api_key != stale:
                return self.api_key
            org = self.personal_org_id
            body = {"name": f"contract replay {self.label}", "role": "admin"}
            status, resp = _http("POST", f"/v1/orgs/{org}/api-keys", body, token=self.current())
            if status == 401:  # the session ended (a replayed logout): sign in again
                status, resp = _http("POST", f"/v1/orgs/{org}/api-keys", body, token=self.login())
            if status != 201:
                raise RuntimeError(f"tenant {self.label} cannot create an API key: {status} {resp}")
            secret = resp["secret"]
            self.seen |= uuids_in(resp)
            status, page = _http("GET", f"/v1/orgs/{org}/projects", headers={header: secret})
            if status != 200:
                raise RuntimeError(f"tenant {self.label}'s new API key does not work in its org: {status} {page}")
            self.api_key = secret
            self.api_keys_made += 1
            return secret

    def key(self, header: str = "X-API-Key") -> str:
        return self.api_key or self.new_api_key(header)


_setup_lock = threading.Lock()
A = Tenant("A")
B = Tenant("B")
# Stands in for A's and B's emails in unauthenticated requests (see before_call).
DECOY = Tenant("decoy")
_ready = False


def tenants() -> tuple[Tenant, Tenant]:
    global _ready
    with _setup_lock:
        if not _ready:
            A.register()
            B.register()
            DECOY.register()
            A.login()
            B.login()
            B.new_api_key()
            if XTENANT_CONTROL:
                A.new_api_key()
            _ready = True
            print(
                f"[palisade hooks] tenant A {A.email} org {A.personal_org_id}; "
                f"tenant B {B.email} org {B.personal_org_id}; sign-ins from {AUTH_SOURCE_IP}",
                flush=True,
            )
    return A, B


# ------------------------------------------------------------------------------ auth


@schemathesis.auth(refresh_interval=REFRESH_SECONDS)
class PalisadeAuth:
    """Signs tenant A in; schemathesis calls get() again after any 401 (reactive re-auth)."""

    def get(self, case, ctx):
        a, _ = tenants()
        return a.login()

    def set(self, case, data, ctx):
        if case.headers is None:
            case.headers = {}
        case.headers["Authorization"] = f"Bearer {data}"


# ------------------------------------------------------------------------------ org_id


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _shield(value: Any, emails: set[str]) -> Any:
    """`value` with every string equal to one of `emails` (trimmed, any case) replaced by the decoy's."""
    if isinstance(value, str):
        return DECOY.email if value.strip().lower() in emails else value
    if isinstance(value, dict):
        return {k: _shield(v, emails) for k, v in value.items()}
    if isinstance(value, list):
        return [_shield(v, emails) for v in value]
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    a, b = tenants()
    params = case.path_parameters
    if params and "org_id" in params:
        value = params["org_id"]
        if _is_uuid(value) and value.lower() not in a.seen:
            params["org_id"] = a.personal_org_id
    # Schemathesis reuses values from responses, A's email included: sent to an unauthenticated
    # operation (sign-in) with a wrong password, it would trip A's per-account login throttle
    # (10 failures / 15 min) and lock the harness out. Such requests get the decoy's email.
    # So do authenticated ones: the audit log answers actor and target names (A's email),
    # which links carry into e.g. an org's name; stored by A and then by B's replay, B's
    # own org would "contain A's email" -- data B's request wrote, not a leak.
    if isinstance(case.body, (dict, list)):
        shielded = _shield(case.body, {a.email, b.email})
        if shielded != case.body:
            case.body = shielded
            with _stats_lock:
                _shielded[0] += 1


# ------------------------------------------------------------------------------ bookkeeping

_stats_lock = threading.Lock()
_stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_semantic: dict[str, int] = defaultdict(int)
# Cross-tenant replays: B's status code -> count, and how many named an object only A had seen.
_replays: dict[str, int] = defaultdict(int)
_replays_naming_a: list[int] = [0]
# The same for the replays with B's API key (operations that take one).
_key_replays: dict[str, int] = defaultdict(int)
_key_replays_naming_a: list[int] = [0]
_shielded: list[int] = [0]


def _secured(case) -> bool:
    raw = case.operation.definition.raw
    security = raw.get("security")
    if security is None:
        security = case.operation.schema.raw_schema.get("security", [])
    return any(req for req in security)


def _sent_token(response) -> str | None:
    header = response.request.headers.get("Authorization") or ""
    return header[7:] if header.lower().startswith("bearer ") else None


@schemathesis.hook
def after_call(context, case, response):
    with _stats_lock:
        _stats[case.operation.label][str(response.status_code)] += 1
    token = _sent_token(response)
    if 200 <= response.status_code < 300 and token:
        a, b = tenants()
        ids = uuids_in(response.content)
        if token in a.tokens:
            a.seen |= ids
        elif token in b.tokens:
            b.seen |= ids


@atexit.register
def _write_stats() -> None:
    try:
        os.makedirs(REPORT_DIR, exist_ok=True)
        with open(os.path.join(REPORT_DIR, "operations.json"), "w") as fh:
            json.dump(
                {
                    "operations": {label: dict(codes) for label, codes in sorted(_stats.items())},
                    "cross_tenant_replays": dict(_replays),
                    "cross_tenant_replays_naming_a_object": _replays_naming_a[0],
                    "cross_tenant_key_replays": dict(_key_replays),
                    "cross_tenant_key_replays_naming_a_object": _key_replays_naming_a[0],
                    "cross_tenant_api_keys_made": B.api_keys_made + (A.api_keys_made if XTENANT_CONTROL else 0),
                    "semantic_rejections_ignored": dict(_semantic),
                    "multipart_type_violations_ignored": dict(_untyped_parts),
                    "tenant_emails_replaced_by_decoy": _shielded[0],
                },
                fh,
                indent=1,
            )
    except OSError:
        pass


# ------------------------------------------------------------------------------ semantic rejections


_untyped_parts: dict[str, int] = defaultdict(int)


_PART_NAME = re.compile(rb'Content-Disposition: form-data; name="([^"]*)"', re.IGNORECASE)


def _form_schema(case) -> dict | None:
    """The operation's multipart/form-data request schema, if it declares one."""
    try:
        media = case.operation.definition.raw["requestBody"]["content"]
        return next(v for k, v in media.items() if k.startswith("multipart/form-data"))["schema"]
    except (KeyError, StopIteration, TypeError):
        return None


def _sent_form_is_valid(case, response) -> bool:
    """True when the multipart request sent has only declared parts, every required one."""
    body = getattr(response.request, "body", None) or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    sent = {name.decode("utf-8", "replace") for name in _PART_NAME.findall(body)}
    schema = _form_schema(case)
    if schema is None:
        return False
    declared = set((schema.get("properties") or {}).keys())
    required = set(schema.get("required") or [])
    return bool(sent) and sent <= declared and required <= sent


_BROKEN_PART = re.compile(r"violates `[^`]+` at /properties/([^\s/]+)")


def _broken_part_is_valid(case, message: str) -> bool:
    """True when the one text part a value-level ST201 names is valid under its own schema."""
    named = _BROKEN_PART.search(message)
    if named is None or not isinstance(case.body, dict) or named.group(1) not in case.body:
        return False
    value = case.body[named.group(1)]
    part = ((_form_schema(case) or {}).get("properties") or {}).get(named.group(1))
    if not isinstance(part, dict) or not isinstance(value, str) or part.get("format") == "binary":
        return False
    return jsonschema_rs.validator_for(part, validate_formats=True).is_valid(value)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except ST202 for a rejection only the server's data can decide,
    and ST201 for a `type` violation inside a multipart form (see below)."""
    code = getattr(failure, "code", None)
    message = getattr(failure, "message", "") or ""
    # Schemathesis's stateful phase can fill a negative case's mutated field from a link
    # (an id from an earlier response), making it valid again, and then report its
    # acceptance with "Invalid component: positive test case": its own contradiction,
    # not a server accepting bad data.
    if code == "ST201" and "Invalid component: positive test case" in message:
        with _stats_lock:
            _untyped_parts[f"{case.operation.label}: ST201 on a positive case"] += 1
        return False
    # A multipart/form-data text part is bytes: an "object" or "array" in place of a string
    # field arrives as its JSON text, which is a valid string (a title may well read
    # `{"a": []}`). No server can tell; schemathesis still counts the acceptance as ST201.
    if (
        code == "ST201"
        and (getattr(case, "media_type", None) or "").startswith("multipart/form-data")
        and "in body - violates `type`" in message
    ):
        with _stats_lock:
            _untyped_parts[f"{case.operation.label}: ST201 type in a part"] += 1
        return False
    # A negative multipart case ("violates `required`" / `additionalProperties`: a renamed
    # or dropped part) that schemathesis serialized back into a valid form -- the parts it
    # sent are all declared and include every required one -- so the server accepted a
    # valid request. Judged on the bytes sent, not on the case.
    if (
        code == "ST201"
        and (getattr(case, "media_type", None) or "").startswith("multipart/form-data")
        and ("violates `required`" in message or "violates `additionalProperties`" in message)
        and _sent_form_is_valid(case, response)
    ):
        with _stats_lock:
            _untyped_parts[f"{case.operation.label}: ST201 on a form sent valid"] += 1
        return False
    # A value-level negative multipart case (schemathesis broke one text part, e.g. appended
    # "*" to break a `pattern`) whose broken value still satisfies its part's schema.
    # Schemathesis judges the broken body with its binary parts stripped to "", so a binary
    # part with `minLength: 1` makes every such body "invalid" whatever the text part holds.
    # Judged here on the part's own schema: a value it accepts was a valid request.
    if (
        code == "ST201"
        and (getattr(case, "media_type", None) or "").startswith("multipart/form-data")
        and _broken_part_is_valid(case, message)
    ):
        with _stats_lock:
            _untyped_parts[f"{case.operation.label}: ST201 on a part still valid"] += 1
        return False
    # A "positive" multipart case in which schemathesis put a None (sent as the text
    # `null`) into an optional, non-nullable part: not schema-valid data, so its rejection
    # is no ST202.
    if (
        code == "ST202"
        and (getattr(case, "media_type", None) or "").startswith("multipart/form-data")
        and isinstance(case.body, dict)
        and any(v is None for v in case.body.values())
    ):
        with _stats_lock:
            _untyped_parts[f"{case.operation.label}: ST202 None in a part"] += 1
        return False
    # The assistant's model is a server the org chooses (`llm_base_url` in its settings):
    # once schemathesis has set it to an address of its own making, the chat answers the
    # declared 502 upstream_error / 504 upstream_timeout -- the model's server failing,
    # not this one.
    if response.status_code in (502, 504) and _problem_code(response) in ("upstream_error", "upstream_timeout"):
        with _stats_lock:
            _semantic[f"{response.status_code} {_problem_code(response)}"] += 1
        return False
    if code != "ST202" or response.status_code not in (400, 422):
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    codes = {body.get("code")} if response.status_code == 400 else {e.get("code") for e in body.get("errors") or []}
    if codes and codes <= SEMANTIC_CODES:
        with _stats_lock:
            _semantic[",".join(sorted(codes))] += 1
        return False
    return True


# ------------------------------------------------------------------------------ cross-tenant check

_replay_session = requests.Session()
KEY_ERRORS = {"invalid_api_key", "api_key_revoked", "api_key_expired", "api_key_creator_disabled"}


def _replay_as(tenant: Tenant, request: requests.PreparedRequest) -> requests.Response:
    for attempt in range(2):
        replay = request.copy()
        replay.headers["Authorization"] = f"Bearer {tenant.current()}"
        replay.headers.pop("X-Schemathesis-TestCaseId", None)
        resp = _replay_session.send(replay, timeout=30, allow_redirects=False)
        if resp.status_code != 401 or attempt:
            return resp
        tenant.login()  # B's session ended (e.g. a replayed logout): sign in again, retry once
    return resp


def _key_header(case) -> str | None:
    """The header of an API-key scheme the operation accepts on its own, if any."""
    raw = case.operation.definition.raw
    security = raw.get("security")
    if security is None:
        security = case.operation.schema.raw_schema.get("security", [])
    schemes = case.operation.schema.raw_schema.get("components", {}).get("securitySchemes", {})
    for requirement in security:
        if len(requirement) != 1:
            continue
        scheme = schemes.get(next(iter(requirement)), {})
        if scheme.get("type") == "apiKey" and scheme.get("in") == "header" and scheme.get("name"):
            return scheme["name"]
    return None


def _problem_code(resp: requests.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _replay_with_key(tenant: Tenant, request: requests.PreparedRequest, header: str) -> requests.Response:
    """`request` with only `header: <tenant's API key>` as its credential (no Authorization)."""
    for attempt in range(2):
        secret = tenant.key(header)
        replay = request.copy()
        replay.headers.pop("Authorization", None)
        replay.headers.pop("X-Schemathesis-TestCaseId", None)
        replay.headers[header] = secret
        resp = _replay_session.send(replay, timeout=30, allow_redirects=False)
        if resp.status_code != 401 or attempt or _problem_code(resp) not in KEY_ERRORS:
            return resp
        tenant.new_api_key(header, stale=secret)  # the key died (how?): a new one, retry once
    return resp


def _judge(who: str, replay: requests.Response, named: set[str], only_a: set[str], a: Tenant, b: Tenant,
           refusals: tuple[int, ...] | None = None) -> list[str]:
    """What is wrong with B's answer to A's request (`refusals`: the only non-2xx allowed when it names A's objects)."""
    if not (200 <= replay.status_code < 300):
        if named and refusals is not None and replay.status_code not in refusals:
            return [f"the request names tenant A's object(s) {sorted(named)}; {who} got {replay.status_code}, "
                    f"expected one of {', '.join(map(str, refusals))}"]
        return []
    b.seen |= uuids_in(replay.content) - only_a
    leaked = uuids_in(replay.content) & only_a
    text = replay.content.decode("utf-8", "replace").lower()
    problems = []
    if named:
        problems.append(f"the request names tenant A's object(s) {sorted(named)}, yet {who} got {replay.status_code}")
    if leaked:
        problems.append(f"{who}'s response contains tenant A's id(s) {sorted(leaked)}")
    if a.email.lower() in text:
        problems.append(f"{who}'s response contains tenant A's email")
    return problems


@schemathesis.check
def cross_tenant_isolation(ctx, response, case):
    """Tenant B replays tenant A's successful request: it must not succeed on A's objects nor see A's data.

    With B's access token always; with B's API key too where the operation takes a key.
    """
    if not (200 <= response.status_code < 300) or not _secured(case):
        return None
    a, b = tenants()
    token = _sent_token(response)
    if token is None or token not in a.tokens:
        return None
    request = response.request
    only_a = a.seen - b.seen
    named = (uuids_in(request.url) | uuids_in(request.body)) & only_a
    replayer = a if XTENANT_CONTROL else b
    who = "A (control)" if XTENANT_CONTROL else "B"
    replay = _replay_as(replayer, request)
    with _stats_lock:
        _replays[str(replay.status_code)] += 1
        if named:
            _replays_naming_a[0] += 1
    problems = _judge(who, replay, named, only_a, a, b)
    failures = []
    if problems:
        failures.append(f"replayed as {who} -> {replay.status_code}: " + "; ".join(problems)
                        + f"\n{who}'s body: {replay.content[:500]!r}")
    header = _key_header(case)
    if header:
        key_replay = _replay_with_key(replayer, request, header)
        with _stats_lock:
            _key_replays[str(key_replay.status_code)] += 1
            if named:
                _key_replays_naming_a[0] += 1
        problems = _judge(f"{who}'s API key", key_replay, named, only_a, a, b, refusals=(401, 403, 404))
        if problems:
            failures.append(f"replayed with {who}'s API key ({header}) -> {key_replay.status_code}: " + "; ".join(problems)
                            + f"\nbody: {key_replay.content[:500]!r}")
    if failures:
        raise AssertionError(
            f"Cross-tenant access: {case.operation.label} as A -> {response.status_code}; " + "\n".join(failures)
        )
    return None
