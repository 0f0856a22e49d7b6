#!/bin/sh
# Make PostgreSQL's server binaries available for the tests (tests/support/postgres.py).
# Installs Debian's postgresql package only when the binaries are missing, and only as root
# or through sudo; otherwise says so and leaves the PostgreSQL tests to skip. Always exits 0.
# (PG_BINDIR and PG_CREATECLUSTER_CONF exist for tests/test_ensure_postgres.py.)
set -u
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
createcluster=${PG_CREATECLUSTER_CONF:-/etc/postgresql-common/createcluster.conf}
if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then exit 0; fi
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: no PostgreSQL server binaries and no apt-get; PostgreSQL tests will skip" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "ensure-postgres: PostgreSQL server binaries missing and not root; PostgreSQL tests will skip" >&2
    exit 0
fi
echo "ensure-postgres: installing Debian's postgresql package" >&2
# The tests start their own servers: ask the package not to create and start a main cluster
# (dpkg keeps this file over the package's own, without asking: --force-confold).
if [ ! -e "$createcluster" ]; then
    $as_root mkdir -p "$(dirname "$createcluster")"
    echo "create_main_cluster = false" | $as_root tee "$createcluster" >/dev/null
fi
$as_root apt-get update -q >/dev/null \
    && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >/dev/null \
    || echo "ensure-postgres: could not install postgresql; PostgreSQL tests will skip" >&2
exit 0
