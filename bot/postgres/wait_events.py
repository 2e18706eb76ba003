"""One line saying what a wait event means (the common ones; PostgreSQL's docs list every event)."""

from __future__ import annotations

WAIT_EVENTS: dict[tuple[str, str], str] = {
    ("Lock", "relation"): "waiting for a lock on a table or index held or queued by another session",
    ("Lock", "transactionid"): "waiting for another transaction to commit or roll back (usually a row it changed)",
    ("Lock", "tuple"): "waiting for a row lock: another session is queued on or holds the same row",
    ("Lock", "virtualxid"): "waiting for another transaction to end (e.g. CREATE INDEX CONCURRENTLY)",
    ("Lock", "advisory"): "waiting for an advisory lock (pg_advisory_lock) taken by the application",
    ("Lock", "extend"): "waiting to extend a relation (another session is adding pages)",
    ("Lock", "page"): "waiting for a page lock",
    ("Lock", "object"): "waiting for a lock on a database object other than a relation",
    ("LWLock", "WALWrite"): "waiting for WAL buffers to be written to disk",
    ("LWLock", "WALInsert"): "waiting to insert WAL into memory buffers",
    ("LWLock", "BufferMapping"): "waiting to find a data block in shared buffers",
    ("LWLock", "LockManager"): "waiting on the lock manager (many sessions taking locks at once)",
    ("LWLock", "BufferContent"): "waiting to read or write a data page in memory",
    ("LWLock", "ProcArray"): "waiting on the shared process array (snapshots, transaction ends)",
    ("LWLock", "XactSLRU"): "waiting on the transaction status cache",
    ("LWLock", "SubtransSLRU"): "waiting on the subtransaction cache (many savepoints)",
    ("BufferPin", "BufferPin"): "waiting for other sessions to release a pinned buffer (VACUUM, recovery)",
    ("IO", "DataFileRead"): "reading a data page from disk",
    ("IO", "DataFileWrite"): "writing a data page to disk",
    ("IO", "WALSync"): "waiting for WAL to be flushed to disk (commit)",
    ("IO", "WALWrite"): "writing WAL to disk",
    ("IO", "BufFileRead"): "reading a temporary file (sort or hash spilled to disk)",
    ("IO", "BufFileWrite"): "writing a temporary file (sort or hash spilled to disk)",
    ("Client", "ClientRead"): "waiting for the client to send something (an idle session, or a slow client)",
    ("Client", "ClientWrite"): "waiting for the client to read results (a slow or stuck client)",
    ("IPC", "SyncRep"): "waiting for a synchronous standby to confirm the commit",
    ("IPC", "BgWorkerShutdown"): "waiting for a background worker to shut down",
    ("IPC", "ExecuteGather"): "a parallel query leader waiting for its workers' rows",
    ("IPC", "ParallelFinish"): "waiting for parallel workers to finish",
    ("IPC", "RecoveryConflictSnapshot"): "the standby's replay waits for queries whose snapshot it would invalidate",
    ("IPC", "RecoveryWalStream"): "the standby's replay waits for WAL from the primary (normal when idle)",
    ("Timeout", "PgSleep"): "inside pg_sleep()",
    ("Timeout", "VacuumDelay"): "a vacuum resting (cost-based vacuum delay)",
    ("Activity", "WalSenderMain"): "a WAL sender with nothing to send",
    ("Activity", "AutoVacuumMain"): "the autovacuum launcher between rounds",
}

BY_TYPE: dict[str, str] = {
    "Lock": "waiting for a heavyweight lock held or requested by another session",
    "LWLock": "waiting for a lightweight lock inside the server (usually brief)",
    "BufferPin": "waiting for exclusive access to a data buffer",
    "IO": "waiting for disk I/O",
    "Client": "waiting for the client application",
    "IPC": "waiting for another server process",
    "Timeout": "waiting for a timeout to expire",
    "Activity": "a server process idle in its main loop",
    "Extension": "waiting inside an extension",
}


def meaning(wait_event_type: str | None, wait_event: str | None) -> str | None:
    if not wait_event_type:
        return None
    return WAIT_EVENTS.get((wait_event_type, wait_event or "")) or BY_TYPE.get(wait_event_type)
