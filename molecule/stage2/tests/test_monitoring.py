"""Stage 2 monitoring: every agent scraped, rules loaded, an outage becomes an alert."""

from __future__ import annotations

import os
import time
from typing import Any

import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
MON = RUNNER.get_hosts("monitoring")[0]
REPLICA = RUNNER.get_hosts("db_replicas")[0]
PRIMARY = RUNNER.get_hosts("db_primary")[0]
ALL = RUNNER.get_hosts("all")


def api(path: str, port: int = 9090) -> Any:
    """Prometheus (9090) and Alertmanager (9093) are not exposed to other hosts (ufw): ask from the monitoring host
    itself. A call that fails (a busy CI machine) raises OSError, which wait_for polls past."""
    return probe.get_json_from(MON, "127.0.0.1", path, port)


def test_every_target_is_up() -> None:
    def all_up() -> bool:
        targets = api("/api/v1/targets?state=active")["data"]["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        return {"node", "mysqld", "nginx", "haproxy", "redis"} <= jobs and all(t["health"] == "up" for t in targets)

    assert probe.wait_for(all_up, timeout=120, interval=2), \
        api("/api/v1/targets?state=active")["data"]["activeTargets"]
    targets = api("/api/v1/targets?state=active")["data"]["activeTargets"]
    node_instances = {t["labels"]["instance"].rsplit(":", 1)[0] for t in targets if t["labels"]["job"] == "node"}
    assert len(node_instances) == len(ALL)


def test_alert_and_recording_rules_are_loaded() -> None:
    groups = api("/api/v1/rules")["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    for wanted in ("InstanceDown", "HAProxyBackendDown", "ReplicationStopped", "ReplicationLagging", "MySQLDown",
                   "CertificateRenewalOverdue", "SemiSyncReplicationOff",
                   "CertificateExpiringSoon", "DiskAlmostFull", "Http5xxRateHigh", "BackupTooOld",
                   "BackupNeverSucceeded", "RedisDown"):
        assert wanted in names, names
    assert any(name.startswith("webstack:") for name in names), names  # web QPS is recorded


def test_replication_and_certificate_are_measured() -> None:
    def value(query: str) -> list[Any]:
        return list(api(f"/api/v1/query?query={query}")["data"]["result"])

    assert probe.wait_for(lambda: value("mysql_slave_status_slave_sql_running") != [], timeout=60, interval=2)
    assert probe.wait_for(lambda: value("webstack_cert_not_after_timestamp_seconds") != [], timeout=60, interval=2)


def test_stopped_node_exporter_raises_instance_down() -> None:
    victim = probe.node(REPLICA)
    instance = f"{probe.container_address(REPLICA)}:9100"

    def firing() -> bool:
        alerts = api("/api/v2/alerts?active=true", 9093)
        return any(a["labels"]["alertname"] == "InstanceDown" and a["labels"].get("instance") == instance
                   for a in alerts)

    assert probe.wait_for(lambda: not firing(), timeout=120, interval=2), "InstanceDown before the test began"
    started = time.monotonic()
    with probe.stopped(victim, "prometheus-node-exporter"):
        assert probe.wait_for(firing, timeout=120, interval=1), \
            api("/api/v2/alerts?active=true", 9093)
        print(f"InstanceDown for {instance} in Alertmanager after {time.monotonic() - started:.1f} s")
    # Cleared once the exporter is back (the resolved notice reaches Alertmanager within a few cycles).
    assert probe.wait_for(lambda: not firing(), timeout=180, interval=2), \
        api("/api/v2/alerts?active=true", 9093)


def test_a_primary_that_waits_for_no_replica_raises_semi_sync_off() -> None:
    """The replica stops receiving; the primary's next write waits its 1 s for an acknowledgement, then goes on
    asynchronously (semi-sync off): the alert fires, and clears once the replica receives again."""
    instance = f"{probe.container_address(PRIMARY)}:9104"

    def firing() -> bool:
        alerts = api("/api/v2/alerts?active=true", 9093)
        return any(a["labels"]["alertname"] == "SemiSyncReplicationOff" for a in alerts)

    assert probe.wait_for(lambda: not firing(), timeout=120, interval=2), "SemiSyncReplicationOff before the test"
    replica, primary = probe.node(REPLICA), probe.node(PRIMARY)
    replica.check_output("mysql -e 'STOP SLAVE IO_THREAD'")
    try:
        primary.check_output("mysql -e \"INSERT INTO foobar.items (text) VALUES ('semi-sync off')\"")
        assert probe.wait_for(firing, timeout=120, interval=1), api("/api/v1/query?query="
                                                                   "mysql_global_status_rpl_semi_sync_master_status")
    finally:
        replica.check_output("mysql -e 'START SLAVE IO_THREAD'")
    # The replica catches up and acknowledges again: the primary waits for it once more.
    primary.check_output("mysql -e \"INSERT INTO foobar.items (text) VALUES ('semi-sync on')\"")
    assert probe.wait_for(lambda: not firing(), timeout=180, interval=2), \
        api("/api/v2/alerts?active=true", 9093)
    status = api("/api/v1/query?query=mysql_global_status_rpl_semi_sync_master_status")
    assert [r["value"][1] for r in status["data"]["result"] if r["metric"]["instance"] == instance] == ["1"], status


def test_an_old_backup_raises_backup_too_old_and_a_new_one_clears_it() -> None:
    """Stage 2's test backup period is 15 s (test.yml): 30 s after a backup BackupTooOld fires for the replica (the
    host that backs up); the next backup clears it."""
    instance = f"{probe.container_address(REPLICA)}:9100"
    replica = probe.node(REPLICA)
    probe.take_backup(replica)  # a success to age (the converge's own first backup may have met a replica catching up)
    query = "/api/v1/query?query=ALERTS%7Balertname%3D%22BackupTooOld%22%7D"

    def firing() -> bool:
        alerts = api(query)["data"]["result"]
        return any(a["metric"]["instance"] == instance and a["metric"]["alertstate"] == "firing" for a in alerts)

    assert probe.wait_for(firing, timeout=180, interval=2), api(
        "/api/v1/query?query=webstack_backup_last_success_timestamp_seconds")
    probe.take_backup(replica)
    assert probe.wait_for(lambda: not firing(), timeout=25, interval=1), api(query)
