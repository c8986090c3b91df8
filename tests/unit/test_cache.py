"""The app's Redis cache, without Redis: a fake client with the store-if-newer rule of the Lua script."""

from __future__ import annotations

import json

import pytest
from foobar_app.cache import BYPASS, HIT, MISS, CacheError, CacheSettings, ItemsCache
from foobar_app.config import DBSettings, Settings, parse_settings
from foobar_app.store import Item
from foobar_app.web import App
from test_app import FakeStore, call

DB = DBSettings(host="db", port=3306, user="u", password="p", database="foobar")
SETTINGS = CacheSettings(host="cache", ttl=5.0, timeout=0.2, retry_after=5.0)


class FakeClient:
    """A dict with the semantics of STORE_IF_NEWER; `down` makes every call fail like a lost server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False
        self.calls = 0

    def _touch(self) -> None:
        self.calls += 1
        if self.down:
            raise CacheError("Timeout reading from socket")

    def get(self, key: str) -> bytes | None:
        self._touch()
        return self.data.get(key)

    def store_if_newer(self, key: str, version: int, payload: str, ttl_ms: int, from_write: bool) -> None:
        self._touch()
        assert ttl_ms == 5000
        current = self.data.get(key)
        if current is not None:
            stored = int(current.split(b"\n", 1)[0])
            if stored > version or (stored == version and not from_write):
                return
        self.data[key] = f"{version}\n{payload}".encode()

    def delete(self, key: str) -> None:
        self._touch()
        self.data.pop(key, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bool] = []

    def latest(self, limit: int, fresh: bool = False) -> list[Item]:
        self.reads.append(fresh)
        return super().latest(limit, fresh)


@pytest.fixture()
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture()
def app(store: CountingStore, client: FakeClient, clock: Clock) -> App:
    return App(Settings(host_name="app-01", write_db=DB, read_db=DB, cache=SETTINGS), store, "r-test",
               ItemsCache(client, SETTINGS, clock))


def ids(body: bytes) -> list[int]:
    return [item["id"] for item in json.loads(body)["items"]]


def post(app: App, text: str) -> int:
    status, _, _ = call(app, "POST", "/api/items", json.dumps({"text": text}).encode())
    return status


def test_a_read_is_a_miss_then_a_hit_and_the_database_is_read_once(app: App, store: CountingStore) -> None:
    first = call(app, "GET", "/api/items")
    second = call(app, "GET", "/")
    assert (first[1]["X-Cache"], second[1]["X-Cache"]) == (MISS, HIT)
    assert store.reads == [False]
    assert b"first &lt;b&gt;" in second[2]


def test_a_write_puts_the_primarys_list_in_the_cache(app: App, store: CountingStore) -> None:
    call(app, "GET", "/api/items")
    assert post(app, "second") == 201
    status, headers, body = call(app, "GET", "/api/items")
    assert (status, headers["X-Cache"], ids(body)) == (200, HIT, [2, 1])
    assert store.reads == [False, True], "the refresh after a write reads the write server"


def test_a_lagging_readers_list_never_replaces_the_writers(app: App, client: FakeClient) -> None:
    assert post(app, "second") == 201
    cache = ItemsCache(client, SETTINGS)
    cache.put(20, [{"id": 1, "text": "first", "created_at": "x"}])  # a replica that has not applied id 2 yet
    assert ids(call(app, "GET", "/api/items")[2]) == [2, 1]


def item(number: int) -> dict[str, object]:
    return {"id": number, "text": f"item {number}", "created_at": "2026-01-01T00:00:00"}


@pytest.mark.parametrize("from_write", [False, True])
def test_a_list_that_saw_fewer_items_never_replaces_one_that_saw_more(client: FakeClient, from_write: bool) -> None:
    """Ids commit out of order: id 10 is allocated before 11 but commits after it. The writer of 10 read 11, 10, 9;
    a reader, or the writer of 11 whose read came before 10's commit, read 11, 9: the same newest id, one item less."""
    cache = ItemsCache(client, SETTINGS)
    cache.put(20, [item(11), item(10), item(9)], from_write=True)
    cache.put(20, [item(11), item(9)], from_write=from_write)
    assert cache.get(20) == ([item(11), item(10), item(9)], HIT)
    cache.put(20, [item(11), item(10), item(9)], from_write=True)  # the same list again: stored (a new TTL)
    cache.put(20, [item(12), item(11), item(10), item(9)])
    assert [entry["id"] for entry in cache.get(20)[0] or []] == [12, 11, 10, 9]


def test_a_failing_cache_is_bypassed_for_a_while_then_tried_again(app: App, store: CountingStore, client: FakeClient,
                                                                  clock: Clock, caplog: pytest.LogCaptureFixture
                                                                  ) -> None:
    client.down = True
    with caplog.at_level("WARNING", logger="foobar_app.cache"):
        answers = [call(app, "GET", "/api/items") for _ in range(5)]
    assert "cache cache:6379 failed" in caplog.text
    assert [(a[0], a[1]["X-Cache"]) for a in answers] == [(200, BYPASS)] * 5
    assert client.calls == 1, "one failed call, then the cache is left alone"
    assert post(app, "while down") == 201
    assert client.calls == 1
    clock.now += SETTINGS.retry_after
    client.down = False
    assert call(app, "GET", "/api/items")[1]["X-Cache"] == MISS
    assert call(app, "GET", "/api/items")[1]["X-Cache"] == HIT


def test_a_write_whose_list_cannot_be_read_drops_the_cached_one(app: App, store: CountingStore,
                                                                client: FakeClient) -> None:
    call(app, "GET", "/api/items")
    original = store.latest

    def failing(limit: int, fresh: bool = False) -> list[Item]:
        if fresh:
            from foobar_app.store import StoreError
            raise StoreError("primary gone after the commit")
        return original(limit, fresh)

    store.latest = failing  # type: ignore[method-assign]
    assert post(app, "second") == 201
    assert client.data == {}
    assert call(app, "GET", "/api/items")[1]["X-Cache"] == MISS


@pytest.mark.parametrize("entry", [
    b"garbage",
    b"5\n[1, 2]",
    b"5\n[{\"id\": \"<script>\", \"text\": \"x\", \"created_at\": \"y\"}]",
    b"5\n{\"id\": 1}",
])
def test_an_entry_that_is_not_a_list_of_items_is_a_miss(client: FakeClient, entry: bytes) -> None:
    """Whoever else writes the key (a wrong client, someone with the password) gets no 500 and no markup served."""
    client.data["foobar:items:latest:20"] = entry
    assert ItemsCache(client, SETTINGS).get(20) == (None, MISS)


def test_without_a_cache_there_is_no_header(store: CountingStore) -> None:
    plain = App(Settings(host_name="app-01", write_db=DB, read_db=DB), store, "r-test")
    assert "X-Cache" not in call(plain, "GET", "/api/items")[1]


def test_settings_read_the_cache_section() -> None:
    base = {"write_db": {"host": "db", "user": "u", "password": "p", "database": "d"}}
    assert parse_settings(base).cache is None
    assert parse_settings({**base, "cache": {"host": ""}}).cache is None
    cache = parse_settings({**base, "cache": {"host": "10.0.0.5", "password": "s", "ttl": 2}}).cache
    assert cache == CacheSettings(host="10.0.0.5", port=6379, password="s", ttl=2.0)
