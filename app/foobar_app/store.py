"""Item storage: a protocol the web layer talks to and its MySQL/MariaDB implementation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from foobar_app.config import DBSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  text VARCHAR(500) NOT NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


class StoreError(Exception):
    """The database could not be reached or refused the statement."""


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

    def latest(self, limit: int) -> list[Item]: ...

    def add(self, text: str) -> Item: ...

    def ping_read(self) -> None: ...

    def ping_write(self) -> None: ...


def _item(row: tuple[Any, ...]) -> Item:
    created = row[2]
    created_text = created.isoformat() if isinstance(created, datetime) else str(created)
    return Item(id=int(row[0]), text=str(row[1]), created_at=created_text)


class MySQLStore:
    """Writes go to the write server, reads to the read server (a replica where there is one).

    One short-lived connection per call keeps workers independent of database restarts.
    """

    def __init__(self, write_db: DBSettings, read_db: DBSettings) -> None:
        self._write_db = write_db
        self._read_db = read_db

    @staticmethod
    def _connect(settings: DBSettings) -> Any:
        import pymysql  # imported lazily so unit tests run without the driver

        try:
            return pymysql.connect(
                host=settings.host,
                port=settings.port,
                user=settings.user,
                password=settings.password,
                database=settings.database,
                connect_timeout=settings.connect_timeout,
                read_timeout=5,
                write_timeout=5,
                autocommit=True,
                charset="utf8mb4",
            )
        except pymysql.MySQLError as exc:
            raise StoreError(f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc

    def _run(self, settings: DBSettings, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import pymysql

        conn = self._connect(settings)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            conn.close()

    def latest(self, limit: int) -> list[Item]:
        rows = self._run(
            self._read_db, "SELECT id, text, created_at FROM items ORDER BY id DESC LIMIT %s", (limit,)
        )
        return [_item(row) for row in rows]

    def add(self, text: str) -> Item:
        import pymysql

        conn = self._connect(self._write_db)
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO items (text) VALUES (%s)", (text,))
                cur.execute("SELECT id, text, created_at FROM items WHERE id = LAST_INSERT_ID()")
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            raise StoreError(str(exc)) from exc
        finally:
            conn.close()
        if row is None:
            raise StoreError("the inserted row could not be read back")
        return _item(row)

    def ping_read(self) -> None:
        self._run(self._read_db, "SELECT 1")

    def ping_write(self) -> None:
        self._run(self._write_db, "SELECT 1")

    def migrate(self) -> bool:
        """Create the schema on the write server; True when the table was created."""
        existed = self._run(self._write_db, "SHOW TABLES LIKE 'items'")
        if existed:
            return False
        self._run(self._write_db, SCHEMA)
        return True
