"""Stage 1 promises: load balancing, replication, zero-loss failover, seen from outside."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
LB = RUNNER.get_hosts("loadbalancers")[0]
PRIMARY = RUNNER.get_hosts("db_primary")[0]
REPLICA = RUNNER.get_hosts("db_replicas")[0]
WEB = RUNNER.get_hosts("webservers")

testinfra_hosts = [LB]


@pytest.fixture(scope="module")
def lb() -> str:
    return probe.container_address(LB)


def sql(name: str, statement: str) -> str:
    return str(probe.node(name).check_output(f'mysql -N -B -e "{statement}"'))


def test_round_robin_reaches_both_web_servers(lb: str) -> None:
    served = [probe.request(lb, "GET", "/").headers["x-served-by"] for _ in range(20)]
    assert set(served) == set(WEB), served
    # Round robin alternates: no server answers twice in a row while both are healthy.
    assert all(a != b for a, b in itertools.pairwise(served)), served


def test_write_through_lb_is_read_on_both_servers(lb: str) -> None:
    text = probe.unique_text("stage1")
    assert probe.request(lb, "POST", "/api/items", {"text": text}).status == 201
    for web in WEB:  # asked directly, from the LB: ufw lets only the load balancers reach port 80
        address = probe.container_address(web)
        assert probe.wait_for(
            lambda a=address: text in [i["text"] for i in probe.get_from(LB, a, "/api/items").json()["items"]],
            timeout=10), f"{web} does not show {text}"


def test_replica_is_healthy_and_caught_up() -> None:
    status = probe.node(REPLICA).check_output("mysql -e 'SHOW SLAVE STATUS\\G'")
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in status.splitlines())}
    assert fields["Slave_IO_Running"] == "Yes" and fields["Slave_SQL_Running"] == "Yes", fields
    assert fields["Seconds_Behind_Master"] == "0"
    assert fields["Using_Gtid"] == "Slave_Pos"
    assert sql(REPLICA, "SELECT @@global.read_only") == "1"
    assert sql(PRIMARY, "SELECT @@global.read_only") == "0"


def test_a_write_is_acknowledged_only_once_the_replica_has_it(lb: str) -> None:
    """Semi-synchronous replication, on at both ends: the primary counts the write through the load balancer as
    acknowledged by the replica (lossless wait point: no one reads it on the primary before the replica has it)."""
    def status(host: str, name: str) -> str:
        return sql(host, f"SHOW GLOBAL STATUS LIKE '{name}'").split()[-1]

    assert status(PRIMARY, "Rpl_semi_sync_master_status") == "ON"
    assert status(PRIMARY, "Rpl_semi_sync_master_clients") == "1"
    assert status(REPLICA, "Rpl_semi_sync_slave_status") == "ON"
    assert sql(PRIMARY, "SELECT @@global.rpl_semi_sync_master_wait_point") == "AFTER_SYNC"
    before = int(status(PRIMARY, "Rpl_semi_sync_master_yes_tx"))
    assert probe.request(lb, "POST", "/api/items", {"text": probe.unique_text("semi-sync")}).status == 201
    assert int(status(PRIMARY, "Rpl_semi_sync_master_yes_tx")) > before


def test_direct_write_to_replica_is_refused() -> None:
    config = probe.node(REPLICA).check_output("cat /etc/foobar/app.json")
    db = json.loads(config)["write_db"]
    result = probe.node(REPLICA).run(
        f"mysql -h 127.0.0.1 -u {db['user']} -p'{db['password']}' {db['database']} "
        "-e \"INSERT INTO items (text) VALUES ('must-not-land')\"")
    assert result.rc != 0 and "1290" in result.stderr + result.stdout


def secrets() -> dict[str, str]:
    """The generated secrets of this run (the wiring's password lookups write them here)."""
    folder = Path(os.environ["WEBSTACK_SECRETS_DIR"])
    return {f.name: f.read_text(encoding="utf-8").split()[0] for f in folder.iterdir() if f.is_file()}


def test_stats_need_credentials_and_metrics_are_exported(lb: str) -> None:
    """Stats listen on the LB's private address, read-only; in stage 1 (no monitoring group) only the LB reaches them
    (the outsider scan in test_stage1_operator.py sees the port filtered)."""
    def get(path: str, *curl: str) -> str:
        return str(probe.node(LB).check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {' '.join(curl)} "
                                               f"http://{lb}:8404{path}"))

    assert get("/") == "401"
    assert get("/", "-u", f"admin:{secrets()['haproxy_stats_password']}") == "200"
    assert secrets()["haproxy_stats_password"] not in probe.node(LB).check_output("cat /etc/haproxy/haproxy.cfg")
    assert "stats admin" not in probe.node(LB).check_output("cat /etc/haproxy/haproxy.cfg")
    assert "haproxy_backend_active_servers" in probe.node(LB).check_output(f"curl -s http://{lb}:8404/metrics")
    assert probe.node(LB).run("curl -s -m 2 http://127.0.0.1:8404/").rc != 0  # not on every interface
    runtime_api = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                   "s.connect('/run/haproxy/admin.sock'); s.sendall(b'show servers state web\\n'); "
                   "print(s.recv(65536).decode())\"")
    state = probe.node(LB).check_output(runtime_api)
    assert all(web in state for web in WEB), state


def test_diff_and_verbose_output_print_no_secret() -> None:
    """A --check --diff -v run that would change the app's config and the stats user prints neither secret."""
    result, recap = probe.run_playbook(probe.ROOT / "site.yml", str(Path(INVENTORY).parent), "--check", "--diff", "-v",
                                       "-e", json.dumps({"app_items_limit": 18, "haproxy_stats_user": "operator"}))
    assert result.returncode == 0 and any(c["changed"] > 0 for c in recap.values()), result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert "haproxy_stats_users" in output or "operator" in output  # the haproxy.cfg diff was printed
    leaked = [name for name, value in secrets().items() if len(value) >= 16 and value in output]
    assert leaked == [], leaked


def test_release_archives_are_not_left_behind() -> None:
    for host in [LB, *WEB]:
        assert probe.node(host).check_output("ls -d /tmp/webstack-release-* 2>/dev/null || true") == ""
    assert not list(Path("/tmp").glob("webstack-release-*"))


def test_check_mode_reports_no_changes() -> None:
    recap = probe.playbook_recap("--check", "--diff")
    assert all(counters["changed"] == 0 for counters in recap.values()), recap
