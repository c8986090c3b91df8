"""Entry point for gunicorn: `gunicorn foobar_app.wsgi:application`."""

from __future__ import annotations

from pathlib import Path

from foobar_app.cache import ItemsCache, RedisClient
from foobar_app.config import load_settings
from foobar_app.store import MySQLStore
from foobar_app.web import App, read_release

_settings = load_settings()
application = App(
    _settings,
    MySQLStore(_settings.write_db, _settings.read_db),
    read_release(Path(__file__).resolve().parent.parent),
    ItemsCache(RedisClient(_settings.cache), _settings.cache) if _settings.cache else None,
)
