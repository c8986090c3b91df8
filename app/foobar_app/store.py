"""Item storage: a protocol the web layer talks to and its MySQL/MariaDB implementation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from foobar_app.config import DBSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  text VARCHAR(500) NOT NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  idempotency_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  UNIQUE KEY uq_items_idempotency_key (idempotency_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
# Keys compare byte for byte (ascii_bin): the server's default collation would make "abc" and "ABC" one key.
# Expand step for tables made before Idempotency-Key support (code of both versions works with the column).
ADD_IDEMPOTENCY_KEY = """
ALTER TABLE items ADD COLUMN idempotency_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  ADD UNIQUE KEY uq_items_idempotency_key (idempotency_key)
"""
DUPLICATE_KEY = 1062


# MySQL/MariaDB error code of a refused login.
ACCESS_DENIED = 1045


class StoreError(Exception):
    """The database could not be reached or refused the statement."""


class StoreUnavailable(StoreError):
    """The server did not let us connect (down, cut off, refusing): nothing was sent to it."""


@dataclass(frozen=True)
class Item:
    """One row of the items table."""

    id: int
    text: str
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "created_at": self.created_at}


class ItemStore(Protocol):
    """What the web layer needs from storage."""

    def latest(self, limit: int, fresh: bool = False) -> list[Item]: ...

    def add(self, text: str, key: str | None = None) -> tuple[Item, bool]: ...

    def ping_read(self, timeout: float) -> None: ...


def _item(row: tuple[Any, ...]) -> Item:
    created = row[2]
    created_text = created.isoformat() if isinstance(created, datetime) else str(created)
    return Item(id=int(row[0]), text=str(row[1]), created_at=created_text)


class MySQLStore:
    """Writes go to the write server, reads to the read server (a replica where there is one), or to the write
    server while the read server does not answer: losing a replica costs no page.

    One short-lived connection per call keeps workers independent of database restarts.
    """

    # After the read server failed, reads go straight to the write server for this long (seconds): a replica that
    # was cut off costs one connect timeout per worker, not one per page.
    READ_RETRY_AFTER = 5.0
    # After the write server could not be reached, writes fail at once (503) for this long (seconds): while the
    # primary is gone, a worker waits for one connect timeout per period instead of one per write, so writes
    # cannot take every worker and starve the reads and the health check.
    WRITE_RETRY_AFTER = 2.0

    def __init__(self, write_db: DBSettings, read_db: DBSettings) -> None:
        self._write_db = write_db
        self._read_db = read_db
        self._read_down_until = 0.0
        self._write_down_until = 0.0
        self._write_lock = threading.Lock()

    @staticmethod
    def _connect(settings: DBSettings, timeout: float | None = None) -> Any:
        """A connection with the first of the password and its fallbacks the server accepts."""
        import pymysql  # imported lazily so unit tests run without the driver

        candidates = (settings.password, *settings.fallback_passwords)
        for index, password in enumerate(candidates):
            try:
                return pymysql.connect(
                    host=settings.host,
                    port=settings.port,
                    user=settings.user,
                    password=password,
                    database=settings.database,
                    connect_timeout=min(settings.connect_timeout, timeout or settings.connect_timeout),
                    read_timeout=timeout or 5,
                    write_timeout=timeout or 5,
                    autocommit=True,
                    charset="utf8mb4",
                )
            except pymysql.MySQLError as exc:
                if index + 1 < len(candidates) and exc.args and exc.args[0] == ACCESS_DENIED:
                    continue
                raise StoreUnavailable(f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc
        raise StoreError("no password to connect with")  # unreachable: candidates is never empty

    def _run(self, settings: DBSettings, sql: str, args: tuple[Any, ...] = (),
             timeout: float | None = None) -> list[tuple[Any, ...]]:
        import pymysql

        conn = self._connect(settings, timeout)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            conn.close()

    def _read(self, sql: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> list[tuple[Any, ...]]:
        """A read on the read server, else on the write server (each try gets half of `timeout`, if given)."""
        if self._read_db == self._write_db:
            return self._run(self._read_db, sql, args, timeout)
        share = timeout / 2 if timeout else None
        if time.monotonic() >= self._read_down_until:
            try:
                return self._run(self._read_db, sql, args, share)
            except StoreError:
                self._read_down_until = time.monotonic() + self.READ_RETRY_AFTER
        return self._run(self._write_db, sql, args, share)

    def latest(self, limit: int, fresh: bool = False) -> list[Item]:
        """The newest rows, from the read server; `fresh`: from the write server (what a write just committed)."""
        sql, args = "SELECT id, text, created_at FROM items ORDER BY id DESC LIMIT %s", (limit,)
        rows = self._run(self._write_db, sql, args) if fresh else self._read(sql, args)
        return [_item(row) for row in rows]

    def add(self, text: str, key: str | None = None) -> tuple[Item, bool]:
        """Insert a row; with an idempotency key, a key seen before returns its row instead (created=False)."""
        with self._write_lock:
            now = time.monotonic()
            if now < self._write_down_until:
                raise StoreUnavailable("the write server could not be reached a moment ago (not tried again yet)")
            if self._write_down_until:  # it was down: this write is the one trial, the others fail fast meanwhile
                self._write_down_until = now + self._write_db.connect_timeout
        try:
            conn = self._connect(self._write_db)
        except StoreUnavailable:
            self._write_down_until = time.monotonic() + self.WRITE_RETRY_AFTER
            raise
        self._write_down_until = 0.0
        import pymysql

        select = "SELECT id, text, created_at FROM items WHERE "
        try:
            with conn.cursor() as cur:
                try:
                    if key is None:
                        cur.execute("INSERT INTO items (text) VALUES (%s)", (text,))
                    else:
                        cur.execute("INSERT INTO items (text, idempotency_key) VALUES (%s, %s)", (text, key))
                except pymysql.err.IntegrityError as exc:
                    if key is None or exc.args[0] != DUPLICATE_KEY:
                        raise
                    cur.execute(select + "idempotency_key = %s", (key,))
                    created = False
                else:
                    cur.execute(select + "id = LAST_INSERT_ID()")
                    created = True
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            conn.close()
        if row is None:
            raise StoreError("the inserted row could not be read back")
        return _item(row), created

    def ping_read(self, timeout: float) -> None:
        self._read("SELECT 1", timeout=timeout)

    def migrate(self) -> bool:
        """Create the schema on the write server, or expand an older one; True when something changed."""
        if not self._run(self._write_db, "SHOW TABLES LIKE 'items'"):
            self._run(self._write_db, SCHEMA)
            return True
        if not self._run(self._write_db, "SHOW COLUMNS FROM items LIKE 'idempotency_key'"):
            self._run(self._write_db, ADD_IDEMPOTENCY_KEY)
            return True
        return False
