"""The nginx role's upstream helper (nginx-upstream): which lines a drain and a ready change."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "roles/nginx/templates/usr/local/sbin/nginx-upstream.j2"
CONFIG = """http {
    upstream app {
        zone app 64k;
        server 10.0.0.1:8000 max_fails=1 fail_timeout=5s;
        server 10.0.0.10:8000 max_fails=1 fail_timeout=5s;
        keepalive 16;
    }
    upstream app_writes {
        zone app_writes 64k;
        server 10.0.0.1:8000 max_fails=1 fail_timeout=5s;
        server 10.0.0.10:8000 max_fails=1 fail_timeout=5s;
    }
    server {
        listen 80 default_server;
    }
}
"""


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    source = re.sub(r"\{\{ ansible_managed \}\}", "managed", TEMPLATE.read_text(encoding="utf-8"))
    source = source.replace("{{ nginx_service_name }}", "nginx")
    assert "{{" not in source
    path = tmp_path_factory.mktemp("helper") / "nginx_upstream.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("nginx_upstream", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drain_flags_every_line_of_that_server_only(helper: ModuleType) -> None:
    drained, count = helper.marked(CONFIG, "10.0.0.1:8000", True)
    assert count == 2
    assert drained.count("server 10.0.0.1:8000 max_fails=1 fail_timeout=5s down;") == 2
    assert drained.count("server 10.0.0.10:8000 max_fails=1 fail_timeout=5s;") == 2
    assert helper.marked(drained, "10.0.0.1:8000", True) == (drained, 2)  # again: nothing changes


def test_ready_restores_the_file_as_the_role_writes_it(helper: ModuleType) -> None:
    drained, _ = helper.marked(CONFIG, "10.0.0.10:8000", True)
    assert helper.marked(drained, "10.0.0.10:8000", False) == (CONFIG, 2)
    assert helper.marked(CONFIG, "10.0.0.10:8000", False) == (CONFIG, 2)


def test_an_unknown_server_or_a_prefix_of_one_matches_nothing(helper: ModuleType) -> None:
    assert helper.marked(CONFIG, "10.0.0.2:8000", True) == (CONFIG, 0)
    assert helper.marked(CONFIG, "10.0.0.1:800", True) == (CONFIG, 0)
    assert helper.marked(CONFIG, "10.0.0.1", True) == (CONFIG, 0)
    assert helper.marked(CONFIG, "10.0.0.1.8000", True) == (CONFIG, 0)  # a dot is not a wildcard


def test_the_last_server_in_rotation_is_known(helper: ModuleType) -> None:
    assert not helper.last_in_rotation(CONFIG, "10.0.0.1:8000")
    drained, _ = helper.marked(CONFIG, "10.0.0.10:8000", True)
    assert helper.last_in_rotation(drained, "10.0.0.1:8000")
    assert not helper.last_in_rotation(drained, "10.0.0.2:8000")  # in no block
    alone = "upstream app {\n    server 127.0.0.1:8000 max_fails=1 fail_timeout=5s;\n}\n"
    assert helper.last_in_rotation(alone, "127.0.0.1:8000")
