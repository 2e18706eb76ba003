"""Helper process: open N idle client connections and hold them until stdin closes.

Run as ``python -m bench.holders DSN N``; prints ``ready <n>`` when they are all open. A separate
process so that neither the bench nor the bot holds 1000 extra file descriptors.
"""

from __future__ import annotations

import resource
import sys

import psycopg


def main() -> int:
    dsn, n = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    conns = []
    for i in range(n):
        c = psycopg.connect(dsn, autocommit=True, application_name=f"bench-holder-{i % 10}")
        c.execute("SELECT 1")
        conns.append(c)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    for c in conns:
        c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
