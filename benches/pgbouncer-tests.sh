#!/usr/bin/env bash
# The API test suite with the server's three pools behind PgBouncer in transaction
# mode (Debian's pgbouncer 1.18, 2 server connections per database and role, auth_type trust),
# and the app in DATABASE_STATEMENT_CACHE=off mode. Includes the parallel-tenants load
# (16 tenants, PALISADE_TENANT_LOAD_ROUNDS rounds each, default here 500) that fails on
# any response carrying another tenant's row. See tests/api/helpers.rs `pgbouncer()`.
#
#   benches/pgbouncer-tests.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pgbouncer >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pgbouncer >/dev/null
    # Only the binary is needed: the package's own service stays off.
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
echo "pgbouncer: $(pgbouncer --version | head -1)"
PALISADE_TEST_PGBOUNCER=1 PALISADE_TENANT_LOAD_ROUNDS=${PALISADE_TENANT_LOAD_ROUNDS:-500} \
    cargo test --test api "$@" -- --nocapture 2>&1 | grep -vE '^\s*$' | grep -E '^test |test result|parallel tenants|panicked|failed|error' 
