#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl: Debian's `postgresql` package) are
# installed, for the store tests that run against a throwaway server on loopback
# (tests/pg_server.py). Idempotent; needs root and the Debian package registry when they are
# missing. Never starts a service (the tests start their own). FLYWHEEL_SKIP_POSTGRES=1 skips.
set -euo pipefail
if [ "${FLYWHEEL_SKIP_POSTGRES:-}" = 1 ]; then
    exit 0
fi
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-postgres: the PostgreSQL server is missing; run as root, or: sudo apt-get install -y postgresql" \
        "(or FLYWHEEL_SKIP_POSTGRES=1 to test SQLite only)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d  # the package's postinst would start a cluster service: say no
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
if ! apt-get install -y --no-install-recommends postgresql; then
    apt-get update
    apt-get install -y --no-install-recommends postgresql
fi
