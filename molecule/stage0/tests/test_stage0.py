"""Stage 0 promises, checked from outside the host where possible."""

from __future__ import annotations

import os
from typing import Any

import pytest
import testinfra.utils.ansible_runner
import webstack_probe as probe

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("webservers")

HOST = testinfra_hosts[0]


@pytest.fixture(scope="module")
def address() -> str:
    return probe.container_address(HOST)


def mysql(host: Any, sql: str) -> str:
    return str(host.check_output(f'mysql -N -B -e "{sql}"'))


@pytest.mark.parametrize("service", ["nginx", "foobar", "mariadb"])
def test_services_enabled_and_running(host: Any, service: str) -> None:
    unit = host.service(service)
    assert unit.is_running and unit.is_enabled


def test_only_expected_ports_listen(host: Any) -> None:
    listening: set[tuple[str, int]] = set()
    sockets = [s for s in host.socket.get_listening_sockets() if s.startswith("tcp")]
    for spec in sockets:
        _, _, rest = spec.partition("://")
        addr, _, port = rest.rpartition(":")
        if addr != "127.0.0.11":  # docker's embedded DNS resolver, not part of the host
            listening.add((addr, int(port)))
    ports = {port for _, port in listening}
    assert ports <= {22, 80, 3306, 8000}, listening
    # The app server and the database answer on loopback only in stage 0.
    assert {addr for addr, port in listening if port in (3306, 8000)} <= {"127.0.0.1"}, listening
    assert 80 in ports and 3306 in ports and 8000 in ports


def test_post_writes_a_row_that_get_shows(host: Any, address: str) -> None:
    text = probe.unique_text("stage0")
    created = probe.request(address, "POST", "/api/items", {"text": text})
    assert created.status == 201, created.body
    assert created.json()["text"] == text
    assert created.headers["x-served-by"] == HOST
    # The row is in MariaDB itself ...
    assert text in mysql(host, f"SELECT text FROM foobar.items WHERE text = '{text}'")
    # ... and the next page through nginx lists it, with the host that answered.
    page = probe.request(address, "GET", "/")
    assert page.status == 200
    assert text.encode() in page.body and HOST.encode() in page.body
    items = probe.request(address, "GET", "/api/items").json()
    assert items["host"] == HOST and text in [i["text"] for i in items["items"]]


def test_static_file_is_served_by_nginx_alone(host: Any, address: str) -> None:
    reply = probe.request(address, "GET", "/static/style.css")
    assert reply.status == 200 and b"font-family" in reply.body
    assert reply.headers.get("x-static") == "nginx"
    assert "x-served-by" not in reply.headers  # gunicorn never saw it
    assert "/static/style.css" not in host.check_output("journalctl -u foobar --no-pager -o cat | tail -n 200")


def test_every_response_names_the_host_and_release(address: str) -> None:
    version = probe.request(address, "GET", "/version")
    assert version.status == 200 and version.body.decode().strip().startswith("r-")
    missing = probe.request(address, "GET", "/no-such-page")
    assert missing.status == 404 and missing.headers["x-served-by"] == HOST


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"text": ""}', ('{"text": "%s"}' % ("x" * 501)).encode()])
def test_bad_input_is_400_json(address: str, body: bytes) -> None:
    reply = probe.request(address, "POST", "/api/items", body)
    assert reply.status == 400
    assert "error" in reply.json()


def test_healthz_follows_the_database(host: Any, address: str) -> None:
    assert probe.request(address, "GET", "/healthz").status == 200
    with probe.stopped(host, "mariadb"):
        assert probe.wait_for(lambda: probe.request(address, "GET", "/healthz").status == 503, timeout=20)
    assert probe.wait_for(lambda: probe.request(address, "GET", "/healthz").status == 200, timeout=30)


def test_secure_install(host: Any) -> None:
    assert mysql(host, "SELECT COUNT(*) FROM mysql.user WHERE User='' OR (User='root' AND Host<>'localhost')") == "0"
    assert "test" not in mysql(host, "SHOW DATABASES").split()
    grants = mysql(host, "SHOW GRANTS FOR 'foobar'@'127.0.0.1'")
    assert "ALL PRIVILEGES" not in grants and "`foobar`.*" in grants


def test_app_config_is_private(host: Any) -> None:
    config = host.file("/etc/foobar/app.json")
    assert config.user == "foobar" and config.mode == 0o600
    assert host.file("/srv/foobar/current").is_symlink
    assert host.file("/srv/foobar/current").linked_to.startswith("/srv/foobar/releases/r-")


def test_check_mode_reports_no_changes() -> None:
    recap = probe.playbook_recap("--check", "--diff")
    assert all(counters["changed"] == 0 for counters in recap.values()), recap
