"""The WSGI app's interface, exercised without a database (a fake store stands in)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from foobar_app.config import DBSettings, Settings, parse_settings
from foobar_app.store import Item, StoreError
from foobar_app.web import App, read_release

DB = DBSettings(host="db", port=3306, user="u", password="p", database="foobar")


class FakeStore:
    def __init__(self) -> None:
        self.items: list[Item] = [Item(1, "first <b>", "2026-01-01T00:00:00")]
        self.read_down = False
        self.write_down = False
        self.keys: dict[str, Item] = {}

    def latest(self, limit: int, fresh: bool = False) -> list[Item]:
        if self.read_down:
            raise StoreError("down")
        return list(reversed(self.items))[:limit]

    def add(self, text: str, key: str | None = None) -> tuple[Item, bool]:
        if self.write_down:
            raise StoreError("down")
        if key is not None and key in self.keys:
            return self.keys[key], False
        item = Item(len(self.items) + 1, text, "2026-01-01T00:00:01")
        self.items.append(item)
        if key is not None:
            self.keys[key] = item
        return item, True

    def ping_read(self, timeout: float) -> None:
        assert timeout <= 1.0, "health must answer well within the load balancer's check timeout"
        if self.read_down:
            raise StoreError("down")


@pytest.fixture()
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture()
def app(store: FakeStore) -> App:
    return App(Settings(host_name="web-01", write_db=DB, read_db=DB), store, "r-test")


def call(app: App, method: str, path: str, body: bytes = b"", content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()},
    }
    payload = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], payload


def test_index_lists_rows_escaped_and_names_host(app: App) -> None:
    status, headers, body = call(app, "GET", "/")
    assert status == 200
    assert headers["X-Served-By"] == "web-01"
    assert b"first &lt;b&gt;" in body and b"web-01" in body


def test_api_items_reports_host_and_items(app: App) -> None:
    status, _, body = call(app, "GET", "/api/items")
    document = json.loads(body)
    assert status == 200
    assert document["host"] == "web-01"
    assert document["items"][0]["text"] == "first <b>"


def test_post_creates_row_and_answers_201(app: App, store: FakeStore) -> None:
    status, headers, body = call(app, "POST", "/api/items", json.dumps({"text": "hello"}).encode())
    assert status == 201
    assert json.loads(body)["text"] == "hello"
    assert store.items[-1].text == "hello"
    assert headers["X-Served-By"] == "web-01"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"{}", "application/json"),
        (b'{"text": ""}', "application/json"),
        (b'{"text": 5}', "application/json"),
        (b'["text"]', "application/json"),
        (json.dumps({"text": "x" * 501}).encode(), "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"text": "ok"}', "text/plain"),
        (b"", "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # nests deeper than the parser allows
        (b'{"text": "\\ud800"}', "application/json"),
    ],
)
def test_bad_input_is_a_400_with_json_error(app: App, body: bytes, content_type: str) -> None:
    status, headers, payload = call(app, "POST", "/api/items", body, content_type)
    assert status == 400
    assert "error" in json.loads(payload)
    assert headers["Content-Type"] == "application/json"


def test_body_over_the_limit_is_413(app: App, store: FakeStore) -> None:
    status, _, payload = call(app, "POST", "/api/items", b"x" * (17 * 1024))
    assert status == 413 and "larger than" in json.loads(payload)["error"]
    assert len(store.items) == 1


def test_idempotency_key_replays_return_the_same_row(app: App, store: FakeStore) -> None:
    body = json.dumps({"text": "once"}).encode()
    first = call(app, "POST", "/api/items", body, headers={"Idempotency-Key": "k-1"})
    again = call(app, "POST", "/api/items", body, headers={"Idempotency-Key": "k-1"})
    assert first[0] == 201 and again[0] == 200 and again[1]["Idempotent-Replayed"] == "true"
    assert json.loads(first[2]) == json.loads(again[2])
    assert [i.text for i in store.items].count("once") == 1
    other = call(app, "POST", "/api/items", json.dumps({"text": "else"}).encode(), headers={"Idempotency-Key": "k-1"})
    assert other[0] == 409
    assert call(app, "POST", "/api/items", body, headers={"Idempotency-Key": "bad key!"})[0] == 400


def test_write_db_down_is_503_not_500(app: App, store: FakeStore) -> None:
    store.write_down = True
    status, _, _ = call(app, "POST", "/api/items", b'{"text": "x"}')
    assert status == 503


def test_healthz_follows_the_read_database(app: App, store: FakeStore) -> None:
    assert call(app, "GET", "/healthz")[0] == 200
    store.write_down = True  # a lost primary must not take a readable host out of the pool
    status, _, body = call(app, "GET", "/healthz")
    assert status == 200 and json.loads(body)["read_db"] == "ok"
    store.read_down = True
    assert call(app, "GET", "/healthz")[0] == 503
    assert call(app, "GET", "/")[0] == 503
    assert call(app, "GET", "/api/items")[0] == 503


def test_version_and_unknown_paths(app: App) -> None:
    status, _, body = call(app, "GET", "/version")
    assert (status, body) == (200, b"r-test\n")
    status, headers, _ = call(app, "GET", "/nope")
    assert status == 404 and headers["X-Served-By"] == "web-01"
    status, headers, _ = call(app, "DELETE", "/api/items")
    assert status == 405 and headers["Allow"] == "GET, POST"


def test_head_has_no_body(app: App) -> None:
    status, headers, body = call(app, "HEAD", "/version")
    assert status == 200 and body == b"" and headers["Content-Length"] == "7"


def test_settings_read_db_defaults_to_write_db() -> None:
    raw = {"host_name": "h", "write_db": {"host": "a", "user": "u", "password": "p", "database": "d"}}
    settings = parse_settings(raw)
    assert settings.read_db == settings.write_db
    assert settings.write_db.port == 3306


def test_settings_name_the_missing_key() -> None:
    with pytest.raises(ValueError, match=r"write_db\.password"):
        parse_settings({"write_db": {"host": "a", "user": "u", "database": "d"}})


def test_release_marker(tmp_path: Any) -> None:
    assert read_release(tmp_path) == "dev"
    (tmp_path / "RELEASE").write_text("r-abc\n")
    assert read_release(tmp_path) == "r-abc"


class FakeDriver:
    """Stands in for pymysql: accepts one password, refuses others with 1045 (or fails with another code)."""

    class MySQLError(Exception):
        pass

    def __init__(self, accepted: str, code: int = 1045) -> None:
        self.accepted, self.code = accepted, code
        self.tried: list[str] = []

    def connect(self, **kwargs: Any) -> str:
        self.tried.append(kwargs["password"])
        if kwargs["password"] != self.accepted:
            raise self.MySQLError(self.code, "Access denied")
        return "connection"


@pytest.mark.parametrize(("accepted", "tried"), [("new", ["new"]), ("old", ["new", "old"])])
def test_a_refused_password_falls_back_during_a_rotation(monkeypatch: pytest.MonkeyPatch, accepted: str,
                                                          tried: list[str]) -> None:
    from foobar_app.store import MySQLStore

    driver = FakeDriver(accepted)
    monkeypatch.setitem(__import__("sys").modules, "pymysql", driver)
    settings = parse_settings({"write_db": {"host": "db", "user": "u", "password": "new", "database": "d",
                                            "fallback_passwords": ["old"]}}).write_db
    assert MySQLStore._connect(settings) == "connection"
    assert driver.tried == tried


def test_only_a_refused_login_tries_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from foobar_app.store import MySQLStore

    driver = FakeDriver("old", code=2003)  # server unreachable: no point in another password
    monkeypatch.setitem(__import__("sys").modules, "pymysql", driver)
    with pytest.raises(StoreError, match="cannot connect"):
        MySQLStore._connect(DBSettings("db", 3306, "u", "new", "d", fallback_passwords=("old",)))
    assert driver.tried == ["new"]


def _db(host: str) -> DBSettings:
    return DBSettings(host=host, port=3306, user="u", password="p", database="d")


def test_reads_fall_back_to_the_write_server_and_skip_a_dead_replica_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from foobar_app import store as store_module

    calls: list[tuple[str, float | None]] = []
    down = {"replica"}

    def run(self: Any, settings: DBSettings, sql: str, args: tuple[Any, ...] = (),
            timeout: float | None = None) -> list[tuple[Any, ...]]:
        calls.append((settings.host, timeout))
        if settings.host in down:
            raise StoreError("cannot connect")
        return [(1, "x", "2026-01-01")]

    clock = [100.0]
    monkeypatch.setattr(store_module.MySQLStore, "_run", run)
    monkeypatch.setattr("foobar_app.store.time.monotonic", lambda: clock[0])
    mysql = store_module.MySQLStore(_db("primary"), _db("replica"))
    mysql.ping_read(0.5)
    assert calls == [("replica", 0.25), ("primary", 0.25)]
    calls.clear()
    assert mysql.latest(5)[0].text == "x"
    assert calls == [("primary", None)]  # the replica is skipped while it was seen down recently
    clock[0] += mysql.READ_RETRY_AFTER
    down.clear()
    calls.clear()
    mysql.latest(5)
    assert calls == [("replica", None)]
    down.update({"replica", "primary"})
    clock[0] += mysql.READ_RETRY_AFTER
    with pytest.raises(StoreError):
        mysql.ping_read(0.5)


def test_one_server_for_reads_and_writes_has_no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from foobar_app import store as store_module

    calls: list[str] = []

    def run(self: Any, settings: DBSettings, sql: str, args: tuple[Any, ...] = (),
            timeout: float | None = None) -> list[tuple[Any, ...]]:
        calls.append(settings.host)
        raise StoreError("down")

    monkeypatch.setattr(store_module.MySQLStore, "_run", run)
    with pytest.raises(StoreError):
        store_module.MySQLStore(_db("db"), _db("db")).ping_read(0.5)
    assert calls == ["db"]


def test_writes_fail_at_once_for_a_while_after_the_write_server_did_not_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from foobar_app import store as store_module

    tries: list[str] = []

    def connect(settings: DBSettings, timeout: float | None = None) -> Any:
        tries.append(settings.host)
        raise store_module.StoreUnavailable("cannot connect")

    clock = [100.0]
    monkeypatch.setattr(store_module.MySQLStore, "_connect", staticmethod(connect))
    monkeypatch.setattr("foobar_app.store.time.monotonic", lambda: clock[0])
    mysql = store_module.MySQLStore(_db("primary"), _db("replica"))
    for _ in range(3):
        with pytest.raises(store_module.StoreUnavailable):
            mysql.add("x")
    assert tries == ["primary"]  # one connect timeout, then 503 at once: workers stay free for reads
    clock[0] += mysql.WRITE_RETRY_AFTER
    during_trial: list[str] = []

    def trial(settings: DBSettings, timeout: float | None = None) -> Any:
        tries.append(settings.host)
        try:
            mysql.add("y")  # another thread's write while the trial connects: refused at once
        except store_module.StoreUnavailable as exc:
            during_trial.append(str(exc))
        raise store_module.StoreUnavailable("cannot connect")

    monkeypatch.setattr(store_module.MySQLStore, "_connect", staticmethod(trial))
    with pytest.raises(StoreError):
        mysql.add("x")
    assert tries == ["primary", "primary"] and len(during_trial) == 1  # one trial after the period
