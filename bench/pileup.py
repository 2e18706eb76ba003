"""Helper process: a lock pile-up. One session holds a row lock, N sessions wait for it.

Run as ``python -m bench.pileup DSN N``; prints ``ready <holder pid>`` when N sessions wait on a lock,
and holds everything until stdin closes (then rolls the holder back and closes all).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import psycopg


async def main_async(dsn: str, n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
    admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="bench-pileup-watch")
    await admin.execute("CREATE TABLE IF NOT EXISTS bench_pile (id int PRIMARY KEY, v int)")
    await admin.execute("INSERT INTO bench_pile VALUES (1, 0) ON CONFLICT DO NOTHING")
    holder = await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="bench-pileup-root")
    await holder.execute("BEGIN")
    await holder.execute("UPDATE bench_pile SET v = v + 1 WHERE id = 1")
    waiters = [
        await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name=f"bench-pileup-{i % 10}")
        for i in range(n)
    ]

    async def wait(c):
        try:
            await c.execute("UPDATE bench_pile SET v = v + 1 WHERE id = 1")
        except psycopg.Error:
            pass

    tasks = [asyncio.create_task(wait(c)) for c in waiters]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        if (await cur.fetchone())[0] >= n:
            break
        await asyncio.sleep(0.1)
    print(f"ready {holder.info.backend_pid}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await holder.execute("ROLLBACK")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for c in [*waiters, holder, admin]:
        await c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main_async(sys.argv[1], int(sys.argv[2]))))
