"""Application settings, read from one JSON file that only the app user can read."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foobar_app.cache import CacheSettings

DEFAULT_CONFIG_PATH = "/etc/foobar/app.json"


@dataclass(frozen=True)
class DBSettings:
    """Where and how to reach one MySQL-compatible server."""

    host: str
    port: int
    user: str
    password: str
    database: str
    connect_timeout: float = 2.0
    # Tried in order when the server refuses `password` (error 1045): set only while a rotation is under way, so
    # the app works before and after the account's password changes (playbooks/rotate-secrets.yml).
    fallback_passwords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything the application needs at run time."""

    host_name: str
    write_db: DBSettings
    read_db: DBSettings
    items_limit: int = 20
    max_text_length: int = 500
    # The Redis cache of the latest items (None: every read goes to the database).
    cache: CacheSettings | None = None


def _cache(raw: dict[str, Any] | None) -> CacheSettings | None:
    if not raw or not raw.get("host"):
        return None
    return CacheSettings(
        host=str(raw["host"]),
        port=int(raw.get("port", 6379)),
        password=str(raw.get("password") or ""),
        ttl=float(raw.get("ttl", 5.0)),
        timeout=float(raw.get("timeout", 0.2)),
        retry_after=float(raw.get("retry_after", 5.0)),
        prefix=str(raw.get("prefix", "foobar:")),
    )


def _db(raw: dict[str, Any], name: str) -> DBSettings:
    try:
        return DBSettings(
            host=str(raw["host"]),
            port=int(raw.get("port", 3306)),
            user=str(raw["user"]),
            password=str(raw["password"]),
            database=str(raw["database"]),
            connect_timeout=float(raw.get("connect_timeout", 2.0)),
            fallback_passwords=tuple(str(p) for p in raw.get("fallback_passwords") or ()),
        )
    except KeyError as exc:
        raise ValueError(f"config: {name}.{exc.args[0]} is missing") from exc


def parse_settings(raw: dict[str, Any]) -> Settings:
    """Turn the decoded JSON document into Settings; the read DB defaults to the write DB."""
    if "write_db" not in raw:
        raise ValueError("config: write_db is missing")
    write_db = _db(raw["write_db"], "write_db")
    read_db = _db(raw["read_db"], "read_db") if raw.get("read_db") else write_db
    return Settings(
        host_name=str(raw.get("host_name") or socket.gethostname()),
        write_db=write_db,
        read_db=read_db,
        items_limit=int(raw.get("items_limit", 20)),
        max_text_length=int(raw.get("max_text_length", 500)),
        cache=_cache(raw.get("cache")),
    )


def load_settings(path: str | None = None) -> Settings:
    """Read settings from `path`, $FOOBAR_CONFIG or the default location."""
    config_path = Path(path or os.environ.get("FOOBAR_CONFIG", DEFAULT_CONFIG_PATH))
    return parse_settings(json.loads(config_path.read_text(encoding="utf-8")))
