"""After schemathesis: every operation of the spec must have been called.

usage: coverage.py SPEC REPORT_DIR   (reads REPORT_DIR/operations.json, written by hooks.py)
Prints each operation's status codes; exits 1 if an operation was never called, or if the
cross-tenant check proved nothing: no replay named one of tenant A's objects (with B's
token; and with B's API key, when some operation takes an API key).
"""

import json
import os
import sys

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

spec_path, report_dir = sys.argv[1], sys.argv[2]
spec = json.load(open(spec_path))
stats_path = os.path.join(report_dir, "operations.json")
try:
    report = json.load(open(stats_path))
    stats = report["operations"]
except (OSError, ValueError) as exc:
    print(f"coverage: cannot read {stats_path}: {exc}")
    sys.exit(1)

operations = [
    (f"{method.upper()} {path}", op.get("operationId", "?"))
    for path, item in spec["paths"].items()
    for method, op in item.items()
    if method in METHODS
]
schemes = spec.get("components", {}).get("securitySchemes", {})
key_capable = [
    f"{method.upper()} {path}"
    for path, item in spec["paths"].items()
    for method, op in item.items()
    if method in METHODS
    and any(
        len(req) == 1 and schemes.get(next(iter(req)), {}).get("type") == "apiKey"
        for req in op.get("security", spec.get("security", []))
    )
]
missing = []
no_success = []
print(f"\ncoverage: {len(operations)} operations in the spec")
for label, op_id in operations:
    codes = stats.get(label, {})
    total = sum(codes.values())
    if not total:
        missing.append(label)
    elif not any(code.startswith("2") for code in codes):
        no_success.append(label)
    shown = " ".join(f"{code}x{n}" for code, n in sorted(codes.items()))
    print(f"  {label:58} {op_id:28} {total:5}  {shown}")
if no_success:
    print(f"coverage: {len(no_success)} operation(s) never answered 2xx (fine when a 2xx needs a secret, e.g. an emailed token):")
    for label in no_success:
        print(f"  - {label}")
replays = report.get("cross_tenant_replays", {})
naming = report.get("cross_tenant_replays_naming_a_object", 0)
shown = " ".join(f"{code}x{n}" for code, n in sorted(replays.items()))
print(f"cross-tenant: {sum(replays.values())} of A's 2xx requests replayed as B ({naming} naming an object only A had seen); B got: {shown or '-'}")
key_replays = report.get("cross_tenant_key_replays", {})
key_naming = report.get("cross_tenant_key_replays_naming_a_object", 0)
shown = " ".join(f"{code}x{n}" for code, n in sorted(key_replays.items()))
print(f"cross-tenant: {sum(key_replays.values())} of A's 2xx requests to the {len(key_capable)} operations that take an "
      f"API key replayed with B's key ({key_naming} naming an object only A had seen; "
      f"{report.get('cross_tenant_api_keys_made', 0)} key(s) made); B's key got: {shown or '-'}")
shielded = report.get("tenant_emails_replaced_by_decoy", 0)
if shielded:
    print(f"login throttle: {shielded} unauthenticated request(s) carried a tenant's email; sent with the decoy's instead")
ignored = report.get("semantic_rejections_ignored", {})
if ignored:
    print("ST202 ignored as semantic rejections (not expressible in a schema): "
          + ", ".join(f"{code} x{n}" for code, n in sorted(ignored.items())))
failed = False
if naming == 0:
    print("cross-tenant: FAIL: no replay named an object of tenant A, so the isolation check proved nothing")
    failed = True
if key_capable and key_naming == 0:
    print("cross-tenant: FAIL: no replay with B's API key named an object of tenant A, so the key check proved nothing")
    failed = True
if missing:
    print(f"coverage: FAIL: {len(missing)} operation(s) never called:")
    for label in missing:
        print(f"  - {label}")
    failed = True
else:
    print("coverage: every operation was called")
sys.exit(1 if failed else 0)
