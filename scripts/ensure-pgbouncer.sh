#!/usr/bin/env bash
# Make sure the two PgBouncer builds the tests start are on this machine (idempotent):
#   1.18  Debian bookworm's package (`apt-get install pgbouncer`), /usr/sbin/pgbouncer
#   1.24  built from Debian trixie's source package into .cache/pgbouncer/ of this project (ignored by git):
#         a deb-src entry for trixie, `apt-get source pgbouncer`, configure, make.
# The tests find them as `/usr/sbin/pgbouncer` and `.cache/pgbouncer/bin/pgbouncer` (or through
# PGSESSIONS_PGBOUNCER_OLD / PGSESSIONS_PGBOUNCER_NEW naming other binaries).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="$here/.cache/pgbouncer"
new_bin="$cache/bin/pgbouncer"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "ensure-pgbouncer: not root and no sudo: install pgbouncer and libevent-dev yourself," >&2
        echo "or point PGSESSIONS_PGBOUNCER_OLD / PGSESSIONS_PGBOUNCER_NEW at binaries." >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
    if [ "$updated" = 0 ]; then $SUDO apt-get update -qq; updated=1; fi
}

# 1.18 from the package. Its maintainer scripts start a service on 6432 where services start; the
# tests never use it (they start their own on free ports) and we stop nothing that is not ours.
if [ -z "${PGSESSIONS_PGBOUNCER_OLD:-}" ] && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "ensure-pgbouncer: installing Debian's pgbouncer" >&2
    apt_update
    $SUDO apt-get install -y -qq pgbouncer >/dev/null
fi

# 1.24 from trixie's source package, built once and cached.
if [ -z "${PGSESSIONS_PGBOUNCER_NEW:-}" ] && [ ! -x "$new_bin" ]; then
    echo "ensure-pgbouncer: building PgBouncer from Debian trixie's source package into $cache" >&2
    src_list=/etc/apt/sources.list.d/pgsessions-trixie-src.sources
    created=0
    if [ ! -f "$src_list" ]; then
        created=1
        # removed again once the source is fetched: the machine's apt sources stay as they were
        trap '[ "$created" = 1 ] && $SUDO rm -f "$src_list"' EXIT
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee "$src_list" >/dev/null
        updated=0
    fi
    apt_update
    need=()
    for pkg in libevent-dev pkg-config dpkg-dev make gcc libssl-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; fi
    work="$cache/src"
    rm -rf "$work"
    mkdir -p "$work"
    (cd "$work" && apt-get source -qq pgbouncer >/dev/null)
    srcdir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'pgbouncer-*' | head -n 1)"
    [ -n "$srcdir" ] || { echo "ensure-pgbouncer: apt-get source pgbouncer unpacked nothing" >&2; exit 1; }
    (cd "$srcdir" && ./configure -q --without-cares --without-pam --without-systemd >/dev/null \
        && make -s -j"$(nproc)" >/dev/null)
    mkdir -p "$cache/bin"
    cp "$srcdir/pgbouncer" "$new_bin.tmp"
    mv "$new_bin.tmp" "$new_bin"
    rm -rf "$work"
fi
exit 0
