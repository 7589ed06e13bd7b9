"""The README's API tour through the generated Python client (openapi-python-client).

Run by ../run.sh with PYTHONPATH pointing at the generated package `palisade_client`:
  PALISADE_URL         base URL of the live server
  PALISADE_SERVER_LOG  the server's log (stderr), where development emails are printed

Operations are looked up by operationId (palisade_client.api.<tag>.<operation_id>), so a
change of tags does not break the tour. Every response is decoded by the generated models
(`Response.parsed`), errors included (the generated `Problem`). Exits non-zero on the
first mismatch.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
import time
import traceback
import uuid
from http import HTTPStatus
from typing import Any

try:
    import palisade_client.api
    from palisade_client import AuthenticatedClient, Client
    from palisade_client.models import (
        ApiKeyPage,
        ApiKeySecretResponse,
        CreateApiKey,
        CreateInvitation,
        CreateOrganization,
        CreateProject,
        InvitationToken,
        LoginBody,
        Me,
        Organization,
        Problem,
        Project,
        ProjectPage,
        RefreshBody,
        Register,
        Role,
        RotateApiKey,
        TokenResponse,
        UpdateProject,
    )
except ImportError as exc:  # a model or module the generator dropped (see its warnings)
    traceback.print_exc()
    print(f"python-tour: the generated client lacks what the tour needs: {exc}", file=sys.stderr)
    print("python-tour: 0 passed, 1 failed")
    sys.exit(1)

BASE_URL = os.environ["PALISADE_URL"]
SERVER_LOG = os.environ["PALISADE_SERVER_LOG"]
INVITE_TOKEN = re.compile(r"invitations/accept\?token=([A-Za-z0-9_-]+)")

_steps = 0


def op(operation_id: str):
    """The generated module of an operation, whatever tag it is filed under."""
    for info in pkgutil.iter_modules(palisade_client.api.__path__):
        try:
            return importlib.import_module(f"palisade_client.api.{info.name}.{operation_id}")
        except ModuleNotFoundError:
            continue
    raise AssertionError(f"the generated client has no operation {operation_id!r}")


def step(title: str) -> None:
    global _steps
    _steps += 1
    print(f"  [{_steps:2}] {title}", flush=True)


def expect(resp, status: int, model: type | None = None) -> Any:
    """The parsed body of `resp`, after checking its status and decoded type."""
    if resp.status_code != status:
        raise AssertionError(
            f"expected HTTP {status}, got {int(resp.status_code)}: {resp.content[:500]!r}"
        )
    if model is not None and not isinstance(resp.parsed, model):
        raise AssertionError(f"expected a {model.__name__}, got {type(resp.parsed).__name__}: {resp.content[:500]!r}")
    return resp.parsed


def expect_problem(resp, status: int, code: str) -> Problem:
    problem = expect(resp, status, Problem)
    assert problem.status == status, problem
    assert problem.code == code, f"expected problem code {code!r}, got {problem.code!r} ({problem.detail})"
    assert problem.type_ and problem.title and problem.detail, problem
    return problem


def check(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def key_client(secret: str) -> AuthenticatedClient:
    """A client that sends only `X-API-Key: <secret>` (no Authorization header).

    This is how openapi-python-client is configured for an `apiKey` scheme in a header: the
    secured operations take an AuthenticatedClient, whose header name and prefix are
    settable (the default is `Authorization: Bearer <token>`).
    """
    return AuthenticatedClient(base_url=BASE_URL, token=secret, prefix="", auth_header_name="X-API-Key")


def rate_limit_policy(resp) -> str:
    """The name of the RateLimit-Policy the response reports (`"api_key";q=...;w=...` -> api_key)."""
    header = resp.headers.get("RateLimit-Policy", "")
    return header.split(";", 1)[0].strip().strip('"')


def invitation_token(anon: Client, email: str, timeout: float = 30.0) -> str:
    """The newest invitation token in the server log that lookup_invitation says is for `email`.

    The log's line format is not relied on: every `invitations/accept?token=...` in the
    whole file is a candidate, newest first, and the API confirms which one is ours.
    """
    deadline = time.monotonic() + timeout
    tried: set[str] = set()
    while time.monotonic() < deadline:
        with open(SERVER_LOG, encoding="utf-8", errors="replace") as fh:
            tokens = INVITE_TOKEN.findall(fh.read())
        for token in reversed(tokens):
            if token in tried:
                continue
            tried.add(token)
            resp = op("lookup_invitation").sync_detailed(client=anon, token=token)
            if resp.status_code == HTTPStatus.OK and resp.parsed.email == email:
                return token
        time.sleep(0.25)
    raise AssertionError(f"no invitation email for {email} in {SERVER_LOG} within {timeout:.0f} s")


def main() -> None:
    run = uuid.uuid4().hex[:10]
    ada_email = f"ada-{run}@example.com"
    bob_email = f"bob-{run}@example.com"
    password = f"correct horse battery {run}"
    anon = Client(base_url=BASE_URL)

    step("register two users (register)")
    ada_me = expect(
        op("register").sync_detailed(
            client=anon, body=Register(email=f"Ada-{run}@Example.com", password=password, name="Ada")
        ),
        201,
        Me,
    )
    check(ada_me.user.email == ada_email, f"email not lowercased: {ada_me.user.email!r}")
    check(ada_me.user.name == "Ada" and ada_me.user.email_verified is False, repr(ada_me.user))
    check(len(ada_me.organizations) == 1 and ada_me.organizations[0].personal, repr(ada_me.organizations))
    bob_me = expect(
        op("register").sync_detailed(client=anon, body=Register(email=bob_email, password=password, name="Bob")),
        201,
        Me,
    )

    step("register the same email again -> 409 email_taken, decoded as Problem")
    expect_problem(
        op("register").sync_detailed(client=anon, body=Register(email=ada_email, password=password, name="Ada 2")),
        409,
        "email_taken",
    )

    step("sign in (login)")
    tokens = expect(
        op("login").sync_detailed(client=anon, body=LoginBody(email=ada_email, password=password)), 200, TokenResponse
    )
    check(tokens.token_type.lower() == "bearer", tokens.token_type)
    check(tokens.expires_in == 3600, f"expires_in {tokens.expires_in} (ACCESS_TOKEN_TTL_SECONDS=3600)")
    check(bool(tokens.access_token) and bool(tokens.refresh_token), "empty token")
    ada = AuthenticatedClient(base_url=BASE_URL, token=tokens.access_token)

    step("wrong password -> 401 invalid_credentials")
    expect_problem(
        op("login").sync_detailed(client=anon, body=LoginBody(email=ada_email, password=password + "x")),
        401,
        "invalid_credentials",
    )

    step("who am I (get_me)")
    me = expect(op("get_me").sync_detailed(client=ada), 200, Me)
    check(me.user.id == ada_me.user.id and me.user.email == ada_email, repr(me.user))
    personal_org = me.user.current_org_id
    check(personal_org == ada_me.organizations[0].id, f"current_org_id {personal_org}")
    check([o.role for o in me.organizations] == ["owner"], repr(me.organizations))

    step("create an organization (create_org)")
    org = expect(
        op("create_org").sync_detailed(client=ada, body=CreateOrganization(name=f"Acme {run}")), 201, Organization
    )
    check(org.name == f"Acme {run}" and not org.personal and org.role == "owner", repr(org))
    check(bool(re.fullmatch(r"[a-z0-9-]+", org.slug)), f"slug {org.slug!r}")

    step("invite Bob as a member (create_invitation)")
    invitation = expect(
        op("create_invitation").sync_detailed(
            org.id, client=ada, body=CreateInvitation(email=bob_email.upper(), role=Role.MEMBER)
        ),
        201,
    )
    check(invitation.email == bob_email and invitation.role == Role.MEMBER, repr(invitation))
    check(invitation.org_id == org.id and invitation.expired is False, repr(invitation))

    step("inviting him again -> 409 invitation_pending")
    expect_problem(
        op("create_invitation").sync_detailed(org.id, client=ada, body=CreateInvitation(email=bob_email, role=Role.MEMBER)),
        409,
        "invitation_pending",
    )

    step("Bob finds the token in his email (server log) and looks it up (lookup_invitation)")
    token = invitation_token(anon, bob_email)
    preview = expect(op("lookup_invitation").sync_detailed(client=anon, token=token), 200)
    check(preview.org_id == org.id and preview.org_name == org.name and preview.role == Role.MEMBER, repr(preview))

    step("Bob signs in and accepts (accept_invitation)")
    bob_tokens = expect(
        op("login").sync_detailed(client=anon, body=LoginBody(email=bob_email, password=password)), 200, TokenResponse
    )
    bob = AuthenticatedClient(base_url=BASE_URL, token=bob_tokens.access_token)
    joined = expect(op("accept_invitation").sync_detailed(client=bob, body=InvitationToken(token=token)), 200, Organization)
    check(joined.id == org.id and joined.role == "member", repr(joined))
    bob_now = expect(op("get_me").sync_detailed(client=bob), 200, Me)
    check(bob_now.user.current_org_id == org.id, f"Bob's current org {bob_now.user.current_org_id}")
    check({o.id for o in bob_now.organizations} == {org.id, bob_me.user.current_org_id}, repr(bob_now.organizations))

    step("the token works once -> 410 invitation_used")
    expect_problem(op("accept_invitation").sync_detailed(client=bob, body=InvitationToken(token=token)), 410, "invitation_used")

    step("create a project (create_project)")
    project = expect(
        op("create_project").sync_detailed(org.id, client=ada, body=CreateProject(name="Apollo", description="first")),
        201,
        Project,
    )
    check(project.name == "Apollo" and project.description == "first" and project.org_id == org.id, repr(project))

    step("same name again -> 409 name_taken")
    expect_problem(op("create_project").sync_detailed(org.id, client=ada, body=CreateProject(name="Apollo")), 409, "name_taken")

    step("list projects (list_projects), as Ada and as Bob (a member)")
    page = expect(op("list_projects").sync_detailed(org.id, client=ada, limit=20), 200, ProjectPage)
    check([p.id for p in page.items] == [project.id], repr(page.items))
    check(not page.next_cursor, f"next_cursor {page.next_cursor!r}")
    bob_page = expect(op("list_projects").sync_detailed(org.id, client=bob), 200, ProjectPage)
    check([p.id for p in bob_page.items] == [project.id], repr(bob_page.items))

    step("Bob cannot see Ada's personal organization -> 404 (never 403)")
    expect_problem(op("list_projects").sync_detailed(personal_org, client=bob), 404, "not_found")

    step("update the project (update_project)")
    updated = expect(
        op("update_project").sync_detailed(
            org.id, project.id, client=ada, body=UpdateProject(name="Apollo 11", description="landed")
        ),
        200,
        Project,
    )
    check(updated.id == project.id and updated.name == "Apollo 11" and updated.description == "landed", repr(updated))
    check(updated.updated_at >= project.updated_at, "updated_at went back")

    step("delete the project (delete_project); it is gone")
    expect(op("delete_project").sync_detailed(org.id, project.id, client=ada), 204)
    page = expect(op("list_projects").sync_detailed(org.id, client=ada), 200, ProjectPage)
    check(page.items == [], repr(page.items))
    expect_problem(op("delete_project").sync_detailed(org.id, project.id, client=ada), 404, "not_found")

    step("as the owner, create an API key (create_api_key); it is listed (list_api_keys) without its secret")
    created = expect(
        op("create_api_key").sync_detailed(org.id, client=ada, body=CreateApiKey(name="CI deploys")),
        201,
        ApiKeySecretResponse,
    )
    api_key = created.api_key
    check(bool(re.fullmatch(r"pal_[A-Za-z0-9]{36}", created.secret)), f"secret {created.secret[:8]}...")
    check(created.secret.startswith(api_key.start) and len(api_key.start) == 8, f"start {api_key.start!r}")
    check(api_key.org_id == org.id and api_key.name == "CI deploys" and api_key.role == Role.MEMBER, repr(api_key))
    check(api_key.created_by == ada_me.user.id and not api_key.revoked_at and not api_key.expires_at, repr(api_key))
    listed_resp = op("list_api_keys").sync_detailed(org.id, client=ada)
    keys = expect(listed_resp, 200, ApiKeyPage)
    check([k.id for k in keys.items] == [api_key.id], repr(keys.items))
    check(created.secret.encode() not in listed_resp.content, "the list shows the secret")

    step("a client with only the X-API-Key header creates and lists projects (create_project, list_projects)")
    robot = key_client(created.secret)
    sent = robot.get_httpx_client().headers
    check("authorization" not in sent and sent.get("x-api-key") == created.secret, f"headers sent: {list(sent)}")
    made_resp = op("create_project").sync_detailed(org.id, client=robot, body=CreateProject(name="Gemini"))
    made = expect(made_resp, 201, Project)
    check(made.org_id == org.id and made.name == "Gemini", repr(made))
    check(rate_limit_policy(made_resp) == "api_key", f"RateLimit-Policy {made_resp.headers.get('RateLimit-Policy')!r}")
    robot_page = expect(op("list_projects").sync_detailed(org.id, client=robot), 200, ProjectPage)
    check([p.id for p in robot_page.items] == [made.id], repr(robot_page.items))
    check([p.id for p in expect(op("list_projects").sync_detailed(org.id, client=ada), 200, ProjectPage).items] == [made.id],
          "Ada does not see the key's project")
    # The same key as `Authorization: Bearer pal_...` (the client's default header).
    as_bearer = AuthenticatedClient(base_url=BASE_URL, token=created.secret)
    expect(op("list_projects").sync_detailed(org.id, client=as_bearer), 200, ProjectPage)

    step("the key only reaches its org's data: get_me -> 403 api_key_not_allowed, another org -> 404")
    expect_problem(op("get_me").sync_detailed(client=robot), 403, "api_key_not_allowed")
    expect_problem(op("list_api_keys").sync_detailed(org.id, client=robot), 403, "api_key_not_allowed")
    expect_problem(op("list_projects").sync_detailed(personal_org, client=robot), 404, "not_found")

    step("rotate the key (rotate_api_key): the old and the new secret both work in the grace period")
    rotated = expect(
        op("rotate_api_key").sync_detailed(org.id, api_key.id, client=ada, body=RotateApiKey(grace_seconds=600)),
        200,
        ApiKeySecretResponse,
    )
    check(rotated.secret != created.secret and rotated.api_key.id == api_key.id, repr(rotated.api_key))
    check(rotated.secret.startswith(rotated.api_key.start) and rotated.api_key.rotated_at is not None, repr(rotated.api_key))
    robot2 = key_client(rotated.secret)
    for client in (robot, robot2):
        page = expect(op("list_projects").sync_detailed(org.id, client=client), 200, ProjectPage)
        check([p.id for p in page.items] == [made.id], repr(page.items))

    step("revoke the key (revoke_api_key) -> 204; its next call gets 401 api_key_revoked, its id 404")
    expect(op("revoke_api_key").sync_detailed(org.id, api_key.id, client=ada), 204)
    expect_problem(op("list_projects").sync_detailed(org.id, client=robot2), 401, "api_key_revoked")
    expect_problem(op("list_projects").sync_detailed(org.id, client=robot), 401, "api_key_revoked")
    expect_problem(op("get_api_key").sync_detailed(org.id, api_key.id, client=ada), 404, "not_found")
    gone = expect(op("list_api_keys").sync_detailed(org.id, client=ada, include_revoked=True), 200, ApiKeyPage)
    check([(k.id, bool(k.revoked_at)) for k in gone.items] == [(api_key.id, True)], repr(gone.items))

    step("refresh the tokens (refresh)")
    fresh = expect(
        op("refresh").sync_detailed(client=anon, body=RefreshBody(refresh_token=tokens.refresh_token)), 200, TokenResponse
    )
    # Only the refresh token must change: an access token issued in the same second for the
    # same session is byte-identical (its claims are sub, sid, iat, exp: no nonce).
    check(fresh.refresh_token != tokens.refresh_token, "refresh token not rotated")
    check(bool(fresh.access_token) and fresh.expires_in == 3600, repr(fresh))
    ada = AuthenticatedClient(base_url=BASE_URL, token=fresh.access_token)

    step("list sessions (list_sessions)")
    sessions = expect(op("list_sessions").sync_detailed(client=ada), 200)
    current = [s for s in sessions.items if s.current]
    check(len(current) == 1, f"{len(current)} current sessions in {sessions.items!r}")

    step("sign out (logout) -> 204; the old token then gets 401")
    expect(op("logout").sync_detailed(client=ada), 204)
    expect_problem(op("get_me").sync_detailed(client=ada), 401, "session_revoked")

    print(f"python-tour: {_steps} passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # an assertion, or a generated model that cannot decode a response
        traceback.print_exc()
        print(f"python-tour: FAILED at step {_steps}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"python-tour: {_steps - 1} passed, 1 failed")
        sys.exit(1)
