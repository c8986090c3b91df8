"""Stage 2 monitoring promises, checked from the controller through Prometheus' and Alertmanager's APIs."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import testinfra
import testinfra.utils.ansible_runner
import webstack_probe as probe

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("all")
MON = RUNNER.get_hosts("monitoring")[0]
DB = RUNNER.get_hosts("db_primary")[0]
SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
WAIT = 60  # hard limit (seconds) of every poll loop


def node(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="module")
def db_host() -> Any:
    return node(DB)


@pytest.fixture(scope="module")
def mon_host() -> Any:
    return node(MON)

# The site's alerts as the wiring configures them (the scenario's old copy of the wiring lacked the last two).
EXPECTED_ALERTS = {"InstanceDown", "HAProxyBackendDown", "HAProxyServerDown", "Http5xxRateHigh",
                   "ReplicationStopped", "ReplicationLagging", "DiskAlmostFull", "CertificateExpiringSoon",
                   "CertificateUnreadable", "MySQLDown", "CertificateRenewalOverdue"}
EXPECTED_RECORDS = {"webstack:haproxy_frontend_http_requests:rate1m", "webstack:web_requests:rate1m",
                    "webstack:nginx_http_requests:rate1m"}


def api(port: int, path: str) -> Any:
    reply = probe.request(probe.container_address(MON), "GET", path, port=port)
    assert reply.status == 200, reply.body[:500]
    return reply.json()


def prometheus(path: str) -> Any:
    return api(9090, path)


def query(expr: str) -> list[dict[str, Any]]:
    return list(prometheus("/api/v1/query?query=" + urllib.parse.quote(expr))["data"]["result"])


def active_alerts() -> list[dict[str, Any]]:
    return [a for a in api(9093, "/api/v2/alerts?active=true&silenced=false&inhibited=false")
            if a["status"]["state"] == "active"]


def alert_active(name: str, **labels: str) -> bool:
    return any(a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items())
               for a in active_alerts())


def target_health() -> dict[tuple[str, str], str]:
    targets = prometheus("/api/v1/targets?state=active")["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}


def test_every_target_is_up() -> None:
    mon, db = probe.container_address(MON), probe.container_address(DB)
    expected = {("node", f"{mon}:9100"), ("node", f"{db}:9100"), ("mysqld", f"{db}:9104"),
                ("nginx", f"{mon}:9113"), ("haproxy", f"{mon}:8404"),
                ("prometheus", "127.0.0.1:9090"), ("alertmanager", "127.0.0.1:9093")}
    assert probe.wait_for(lambda: set(target_health()) == expected
                          and all(h == "up" for h in target_health().values()), timeout=WAIT), target_health()


@pytest.mark.parametrize("expr", ["mysql_up", "nginx_up", "haproxy_backend_active_servers{proxy=\"web\"}"])
def test_exporters_read_their_service(expr: str) -> None:
    assert probe.wait_for(lambda: [r["value"][1] for r in query(expr)] == ["1"], timeout=WAIT), query(expr)


def test_rules_are_loaded_and_healthy() -> None:
    groups = prometheus("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules if r["type"] == "alerting"} == EXPECTED_ALERTS
    assert {r["name"] for r in rules if r["type"] == "recording"} == EXPECTED_RECORDS
    assert probe.wait_for(lambda: all(r["health"] == "ok" for g in prometheus("/api/v1/rules")["data"]["groups"]
                                      for r in g["rules"]), timeout=WAIT)


def test_instance_down_reaches_alertmanager(db_host: Any) -> None:
    instance = probe.container_address(DB) + ":9100"
    assert not alert_active("InstanceDown", instance=instance)
    start = time.monotonic()
    with probe.stopped(db_host, "prometheus-node-exporter"):
        assert probe.wait_for(lambda: alert_active("InstanceDown", instance=instance, job="node"), timeout=WAIT)
        fired = time.monotonic() - start
    assert probe.wait_for(lambda: target_health()[("node", instance)] == "up", timeout=WAIT)
    assert probe.wait_for(lambda: not alert_active("InstanceDown", instance=instance), timeout=WAIT)
    resolved = time.monotonic() - start - fired
    print(f"InstanceDown in Alertmanager {fired:.1f} s after the stop; resolved {resolved:.1f} s later")


def test_dead_haproxy_backend_alerts() -> None:
    assert probe.wait_for(lambda: alert_active("HAProxyBackendDown", proxy="dead"), timeout=WAIT)
    assert probe.wait_for(lambda: alert_active("HAProxyServerDown", proxy="dead", server="nothing"), timeout=WAIT)
    assert not alert_active("HAProxyBackendDown", proxy="web")


def test_5xx_through_haproxy_alerts_and_qps_is_recorded() -> None:
    # nginx answers 502 (no application server behind it here): HAProxy counts them as backend 5xx.
    mon = probe.container_address(MON)
    statuses = {probe.request(mon, "GET", "/", port=8081).status for _ in range(20)}
    assert statuses == {502}, statuses
    assert probe.wait_for(lambda: alert_active("Http5xxRateHigh", proxy="web"), timeout=WAIT)
    assert probe.wait_for(lambda: any(float(r["value"][1]) > 0 for r in query("webstack:web_requests:rate1m")),
                          timeout=WAIT)
    assert probe.wait_for(lambda: any(float(r["value"][1]) > 0 for r in query("webstack:nginx_http_requests:rate1m")),
                          timeout=WAIT)


def test_expiring_certificate_alerts_from_a_real_metric() -> None:
    series = query("webstack_cert_not_after_timestamp_seconds")
    assert {r["metric"]["path"].rsplit("/", 1)[-1] for r in series} == {"long.pem", "short.pem"}
    assert probe.wait_for(lambda: alert_active("CertificateExpiringSoon", path="/etc/ssl/webstack-molecule/short.pem"),
                          timeout=WAIT)
    assert not any(a["labels"].get("path", "").endswith("long.pem") for a in active_alerts())


def test_stopped_replication_alerts(db_host: Any) -> None:
    # db-01 replicates from an absent primary (see converge.yml): the IO thread never runs.
    instance = probe.container_address(DB) + ":9104"
    assert "Slave_IO_Running: Yes" not in db_host.check_output("mysql -e 'SHOW SLAVE STATUS\\G'")
    assert probe.wait_for(lambda: [r["value"][1] for r in query("mysql_slave_status_slave_io_running")] == ["0"],
                          timeout=WAIT), query("mysql_slave_status_slave_io_running")
    assert probe.wait_for(lambda: alert_active("ReplicationStopped", instance=instance), timeout=WAIT)


def test_exporter_credentials_are_private(db_host: Any) -> None:
    cnf = db_host.file("/var/lib/prometheus/.my.cnf")
    assert cnf.user == "prometheus" and cnf.mode == 0o600
    grants = db_host.check_output("mysql -N -B -e \"SHOW GRANTS FOR 'exporter'@'127.0.0.1'\"")
    assert all(p in grants for p in ("PROCESS", "BINLOG MONITOR", "SELECT", "SLAVE MONITOR")), grants


@pytest.mark.parametrize("service", ["prometheus-node-exporter", "webstack-cert-expiry.timer"])
def test_agent_services_enabled_and_running(host: Any, service: str) -> None:
    unit = host.service(service)
    assert unit.is_running and unit.is_enabled


def test_installed_config_is_valid_and_reloadable(mon_host: Any) -> None:
    mon_host.run_expect([0], "promtool check config /etc/prometheus/prometheus.yml")
    mon_host.run_expect([0], "amtool check-config /etc/prometheus/alertmanager.yml")
    for unit in ("prometheus", "prometheus-alertmanager"):
        assert "kill -HUP" in mon_host.check_output(f"systemctl show -p ExecReload {unit}")


def test_check_mode_reports_no_changes() -> None:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_FILTER_PLUGINS=str(ROOT / "filter_plugins"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_PIPELINING="true", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    result = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                             str(SCENARIO / "converge.yml"), "--check", "--diff"],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).split("PLAY RECAP")[-1]
    recap = dict(re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", plain, re.MULTILINE))
    assert recap and all(v == "0" for v in recap.values()), result.stdout[-4000:]
