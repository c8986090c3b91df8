"""A short-lived cache of the latest items in Redis, which the site survives losing.

Reads look in the cache first; a miss reads the database and stores what it read for `ttl` seconds. A write
stores the list as the primary has it right after the commit. An entry is stored with its version, the sum of the
item ids it holds: items are only ever added, so a list that has seen more of them (the newest `limit` of a
larger set) has a larger sum, and a store never replaces a list with one that has seen less (a reader that read a
lagging replica, or a writer whose read came before another write's commit, cannot overwrite it). So once a POST
has been answered, later cache hits include its item.

Redis is an accelerator only: any error (down, cut off, hung, refusing the password) answers as a miss, and for
`retry_after` seconds this process does not ask Redis again, so a hung server costs one `timeout` per period,
not one per request. Items shown may be up to `ttl` seconds old only when a write could not refresh the cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# Store ARGV[2] under KEYS[1] for ARGV[3] ms unless the entry there holds a newer list: its version (the text
# before the first newline) is higher than ARGV[1], or equal and ARGV[4] is not "1" (an equal list is stored again,
# with a new TTL, only by a writer, who read the primary). An entry without a TTL was not written by this code: it
# is replaced whatever it claims.
STORE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and redis.call('PTTL', KEYS[1]) >= 0 then
  local version = tonumber(string.match(current, '^(%d+)\\n'))
  local candidate = tonumber(ARGV[1])
  if version and (version > candidate or (version == candidate and ARGV[4] ~= '1')) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'PX', ARGV[3])
return 1
"""

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"
LOG = logging.getLogger("foobar_app.cache")


class CacheError(Exception):
    """Redis did not answer, or answered with an error."""


@dataclass(frozen=True)
class CacheSettings:
    """Where the cache is and how long its entries and its failures count."""

    host: str
    port: int = 6379
    password: str = ""
    ttl: float = 5.0
    timeout: float = 0.2
    retry_after: float = 5.0
    prefix: str = "foobar:"


class CacheClient(Protocol):
    """The three calls the cache makes (RedisClient, or a fake in the tests)."""

    def get(self, key: str) -> bytes | None: ...

    def store_if_newer(self, key: str, version: int, payload: str, ttl_ms: int, from_write: bool) -> None: ...

    def delete(self, key: str) -> None: ...


class RedisClient:
    """CacheClient over redis-py: one connection pool per process, no retries (a failure is a miss)."""

    def __init__(self, settings: CacheSettings) -> None:
        import redis  # imported lazily so unit tests run without the driver
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._redis = redis.Redis(
            host=settings.host,
            port=settings.port,
            password=settings.password or None,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._store = self._redis.register_script(STORE_IF_NEWER)

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._errors as exc:
            raise CacheError(str(exc)) from exc

    def get(self, key: str) -> bytes | None:
        value = self._call(lambda: self._redis.get(key))
        return value if isinstance(value, bytes) else None

    def store_if_newer(self, key: str, version: int, payload: str, ttl_ms: int, from_write: bool) -> None:
        self._call(lambda: self._store(keys=[key], args=[version, payload, ttl_ms, "1" if from_write else "0"]))

    def delete(self, key: str) -> None:
        self._call(lambda: self._redis.delete(key))


Items = list[dict[str, Any]]


def valid_items(value: Any) -> bool:
    """What the cache returned is a list of items as the store makes them (anything else is a miss)."""
    return isinstance(value, list) and all(
        isinstance(item, dict) and type(item.get("id")) is int
        and isinstance(item.get("text"), str) and isinstance(item.get("created_at"), str)
        for item in value)


class ItemsCache:
    """The latest-items list in the cache, and this process's memory of the cache failing."""

    def __init__(self, client: CacheClient, settings: CacheSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _key(self, limit: int) -> str:
        return f"{self._settings.prefix}items:latest:{limit}"

    def _available(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, error: CacheError) -> None:
        with self._lock:
            self._down_until = self._clock() + self._settings.retry_after
        LOG.warning("cache %s:%s failed (%s); reading the database for %.0f s",
                    self._settings.host, self._settings.port, error, self._settings.retry_after)

    def get(self, limit: int) -> tuple[Items | None, str]:
        """The cached list and HIT; None and MISS when absent; None and BYPASS while the cache is failing."""
        if not self._available():
            return None, BYPASS
        try:
            raw = self._client.get(self._key(limit))
        except CacheError as exc:
            self._failed(exc)
            return None, BYPASS
        if raw is None:
            return None, MISS
        try:
            items = json.loads(raw.decode("utf-8").split("\n", 1)[1])
        except (UnicodeDecodeError, IndexError, json.JSONDecodeError):
            return None, MISS  # not ours or truncated: read the database and overwrite it
        return (items, HIT) if valid_items(items) else (None, MISS)

    def put(self, limit: int, items: Items, from_write: bool = False) -> None:
        """Store `items` unless the cache holds a newer list (see STORE_IF_NEWER)."""
        if not self._available():
            return
        version = sum(int(item["id"]) for item in items)
        payload = json.dumps(items, separators=(",", ":"))
        try:
            self._client.store_if_newer(self._key(limit), version, payload, int(self._settings.ttl * 1000), from_write)
        except CacheError as exc:
            self._failed(exc)

    def forget(self, limit: int) -> None:
        """Drop the cached list (after a write whose fresh list could not be read)."""
        if not self._available():
            return
        try:
            self._client.delete(self._key(limit))
        except CacheError as exc:
            self._failed(exc)
