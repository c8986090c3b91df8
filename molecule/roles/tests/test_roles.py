"""Each role alone, by its collection name: its service answers (the idempotence step shows the rerun is clean)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import testinfra
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
LB, WEB, MON, SEC = "webstack-mr-lb", "webstack-mr-web", "webstack-mr-mon", "webstack-mr-sec"
testinfra_hosts = [LB, WEB, MON, SEC]


def node(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.mark.parametrize(("name", "services"), [
    (LB, ["haproxy", "keepalived", "redis-server"]),
    (WEB, ["mariadb", "app", "nginx"]),
    (MON, ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]),
    (SEC, ["ssh"]),
])
def test_each_roles_service_runs(name: str, services: list[str]) -> None:
    for service in services:
        unit = node(name).service(service)
        assert unit.is_running and unit.is_enabled, service


def test_nginx_app_and_mysql_serve_a_written_row_from_outside() -> None:
    """nginx -> gunicorn (app role) -> MariaDB (mysql role), each applied alone, reached from the controller."""
    address = probe.container_address(WEB)
    assert probe.wait_for(lambda: probe.request(address, "GET", "/healthz").status == 200, timeout=30)
    posted = probe.request(address, "POST", "/api/items", body={"text": "alone"})
    assert posted.status in (200, 201), posted.status
    assert b"alone" in probe.request(address, "GET", "/api/items").body


def test_backup_dumps_the_database_with_its_checksums() -> None:
    """The backup role's service (its timer's unit, started by hand): a complete, checksummed dump of the database."""
    web = node(WEB)
    assert web.service("webstack-backup.timer").is_enabled
    backup = f"/srv/backups/mariadb/{probe.take_backup(web, '/srv/backups/mariadb')}"  # its sums verified there
    assert "CREATE TABLE `items`" in web.check_output(f"gzip -dc {backup}/app.sql.gz")


def test_haproxy_balances_to_the_web_container_and_keepalived_holds_the_vip() -> None:
    lb = node(LB)
    assert probe.wait_for(lambda: probe.request(probe.container_address(LB), "GET", "/healthz").status == 200,
                          timeout=30)
    assert probe.wait_for(lambda: "10.251.60.100/24" in lb.check_output("ip -4 -o addr show"), timeout=15)
    assert lb.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0


def test_redis_answers_only_with_its_password_on_its_private_address() -> None:
    lb = node(LB)
    cli = f"redis-cli -h {probe.container_address(LB)}"
    assert "NOAUTH" in lb.check_output(f"{cli} ping")
    assert lb.check_output(f"REDISCLI_AUTH=molecule-cache-password {cli} ping") == "PONG"
    assert "unknown command" in lb.check_output(f"REDISCLI_AUTH=molecule-cache-password {cli} flushall").lower()
    assert "molecule-cache-password" not in lb.check_output("cat /etc/redis/redis.conf")
    assert lb.check_output("stat -c %a /etc/redis/auth.conf") == "640"


def test_certbot_self_signed_bundle_names_the_domains() -> None:
    text = node(LB).check_output(
        "openssl x509 -noout -ext subjectAltName -in /etc/haproxy/certs/www.example.test.pem")
    assert "www.example.test" in text and "example.test" in text


def test_prometheus_scrapes_the_agent() -> None:
    mon = node(MON)
    query = "curl -s 'http://127.0.0.1:9090/api/v1/query?query=up'"
    assert probe.wait_for(lambda: '"1"]' in mon.check_output(query), timeout=60), mon.check_output(query)


def test_sshd_ufw_and_the_internal_ca_hold() -> None:
    sec = node(SEC)
    assert "Status: active" in sec.check_output("ufw status")
    assert "allowusers root" in sec.check_output("sshd -T").lower()
    assert sec.run("openssl verify -CAfile /etc/ssl/webstack/ca.crt /etc/ssl/webstack/host.crt").rc == 0
