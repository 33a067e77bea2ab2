"""The per-context consolidation lock: one pass per context at a time, whichever process runs it (a queue worker,
`sleeptime consolidate`, an HTTP `?wait=true` call).

The lock belongs to the process holding it and dies with it (SIGKILL included), so a run record still "running" when
the lock is free was left by a process that is gone:
  PostgreSQL  a session advisory lock on a connection of its own (in autocommit: no transaction stays open)
  SQLite      flock(2) on a file per context beside the database file, named by a hash of the context name
  in memory   a lock per context in this process (an in-memory database has no other process)
"""

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from sleeptime.db.engine import is_memory_sqlite

try:
    import fcntl
except ImportError:  # not POSIX: the in-process lock alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# an arbitrary constant: the first key of sleeptime's pass locks, so they cannot meet another application's locks
PASS_LOCK_CLASS = 0x5EE9
_TRY_PG = text("SELECT pg_try_advisory_lock(:cls, hashtext(:name))")
_UNLOCK_PG = text("SELECT pg_advisory_unlock(:cls, hashtext(:name))")

Release = Callable[[], None]


class PassLocks:
    """try_acquire(name) -> a release function, or None when another pass holds the context's lock."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._local: dict[str, threading.Lock] = {}
        self._local_guard = threading.Lock()
        self._dir: Path | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and not is_memory_sqlite(url) and fcntl is not None:
            database = Path(url.database.removeprefix("file:")).expanduser()
            self._dir = database.with_name(database.name + ".locks")

    def try_acquire(self, name: str) -> Release | None:
        if self._engine.dialect.name == "postgresql":
            return self._try_postgres(name)
        if self._dir is not None:
            return self._try_file(name)
        return self._try_local(name)

    def _try_postgres(self, name: str) -> Release | None:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        params = {"cls": PASS_LOCK_CLASS, "name": name}
        try:
            held = conn.execute(_TRY_PG, params).scalar()
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute(_UNLOCK_PG, params)
            except Exception:
                # the connection broke: the server dropped the lock with it
                log.warning("pass lock of %r: the connection was lost before unlocking", name, exc_info=True)
            finally:
                # closing returns the connection to the pool; a broken one is discarded
                conn.close()

        return release

    def _try_file(self, name: str) -> Release | None:
        assert self._dir is not None and fcntl is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        # a hash, not the name: the file system keeps nothing of what the user called the context
        path = self._dir / hashlib.sha256(name.encode()).hexdigest()[:32]
        f = open(path, "a+b")  # noqa: SIM115 held open while the lock is held
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        except BaseException:
            f.close()
            raise

        def release() -> None:
            # closing the file drops the lock
            f.close()

        return release

    def _try_local(self, name: str) -> Release | None:
        with self._local_guard:
            lock = self._local.setdefault(name, threading.Lock())
        return lock.release if lock.acquire(blocking=False) else None
