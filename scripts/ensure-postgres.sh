#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are installed: the tests start
# their own throw-away primary and standby with them. Installs Debian's package when missing.
set -euo pipefail
have() {
    command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have; then
    exit 0
fi
echo "PostgreSQL server binaries not found: installing them" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
    echo "Install PostgreSQL 13 or newer (server binaries: initdb, pg_ctl, pg_basebackup), or point the tests at" >&2
    echo "running servers with PGSESSIONS_TEST_PRIMARY_DSN and PGSESSIONS_TEST_STANDBY_DSN." >&2
    exit 1
fi
have || { echo "PostgreSQL was installed but initdb is still not found" >&2; exit 1; }
