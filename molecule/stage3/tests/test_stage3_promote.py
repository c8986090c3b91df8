"""Stage 3's database primary lost, under a bounded write load: playbooks/promote.yml makes the replica the primary,
writes succeed again, and every write the site acknowledged is on the new primary (semi-synchronous replication);
a converge before the inventory edit stops before it changes anything; after the edit, the old primary (started
again) rejoins as a replica of the new one.

Runs after test_stage3.py (file order) and last, its tests in order: the scenario's inventory no longer names its
primary afterwards."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import webstack_probe as probe
from test_stage3 import APP, INVENTORY, LBS, REPLICA, RUNNER, VIP

PRIMARY = RUNNER.get_hosts("db_primary")[0]
RESULTS = probe.ROOT / "build" / "stage3-promote.json"

testinfra_hosts = [LBS[0]]


def test_promoting_the_replica_after_the_primary_is_killed_keeps_every_acknowledged_write(root: str) -> None:
    inventory = str(Path(INVENTORY).parent)
    # While the primary answers, the playbook refuses (its clients may still write there) and changes nothing.
    refused, recap = probe.run_playbook(probe.ROOT / "playbooks" / "promote.yml", inventory)
    assert refused.returncode != 0 and "promote_fence=true" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap

    writer = probe.Writer(VIP, root)
    with writer:
        assert probe.wait_for(lambda: len(writer.acknowledged) >= 20, timeout=30), writer.failed[-5:]
        subprocess.run(["docker", "kill", PRIMARY], check=True, capture_output=True)  # not started again
        killed = time.monotonic()
        promoted, recap = probe.run_playbook(probe.ROOT / "playbooks" / "promote.yml", inventory)
        assert promoted.returncode == 0, promoted.stdout[-4000:]
        done = time.monotonic()
        assert probe.wait_for(lambda: writer.acknowledged_after(done), timeout=30), writer.failed[-5:]
        figures = {"acknowledged": len(writer.acknowledged), "failed": len(writer.failed),
                   "kill_to_promoted_s": round(done - killed, 1),
                   "kill_to_first_write_s": round(min(at for at, _ in writer.acknowledged if at > killed) - killed, 1)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")  # for the closing note
        print(f"promotion: {figures}")

    on_new_primary = {int(row) for row in probe.node(REPLICA).check_output(
        "mysql -N -B -e 'SELECT id FROM foobar.items'").split()}
    before_kill = writer.ids(until=killed)
    assert before_kill and before_kill <= on_new_primary, sorted(before_kill - on_new_primary)
    assert writer.ids() <= on_new_primary
    assert probe.node(REPLICA).check_output("mysql -N -B -e 'SELECT @@global.read_only'") == "0"
    assert probe.node(REPLICA).check_output("mysql -N -B -e 'SHOW SLAVE STATUS'") == ""
    assert "read_only = OFF" in probe.node(REPLICA).check_output("cat /etc/mysql/mariadb.conf.d/60-webstack.cnf")
    assert f"{REPLICA} is the primary" in promoted.stdout

    # Before the inventory edit, a converge (here one of just the app tier, as an operator might run) would point
    # the app servers back at the old primary: it stops before any change, naming the edit.
    app_config = {host: probe.node(host).check_output("cat /etc/foobar/app.json") for host in APP}
    stopped, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--tags", "app")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and f"{REPLICA} was promoted to primary" in output, output[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap
    assert {host: probe.node(host).check_output("cat /etc/foobar/app.json") for host in APP} == app_config
    assert all(probe.container_address(REPLICA) in config for config in app_config.values()), app_config


def test_the_old_primary_rejoins_as_a_replica_after_the_inventory_edit(tmp_path: Path, root: str) -> None:
    """The killed primary comes back (a writable server with data of its own); with the inventory edited, one run
    with mysql_replication_reseed=true re-seeds it from the new primary and it replicates; the next run changes
    nothing."""
    probe.start_booted(PRIMARY)
    inventory = str(probe.promoted_inventory(Path(INVENTORY).parent, tmp_path / "inventory", "ansible_inventory.yml"))
    pair = f"{REPLICA},{PRIMARY}"
    rejoined, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--limit", pair,
                                         "-e", "mysql_replication_reseed=true")
    assert rejoined.returncode == 0, (rejoined.stdout + rejoined.stderr)[-4000:]
    old = probe.node(PRIMARY)
    status = old.check_output("mysql -e 'SHOW SLAVE STATUS\\G'")
    assert "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status, status
    assert old.check_output("mysql -N -B -e 'SELECT @@global.read_only'") == "1"
    text = probe.unique_text("rejoined")
    assert probe.request(VIP, "POST", "/api/items", {"text": text}, cafile=root).status == 201
    assert probe.wait_for(lambda: text in old.check_output(
        f"mysql -N -B -e \"SELECT text FROM foobar.items WHERE text = '{text}'\""), timeout=10)
    count = "mysql -N -B -e 'SELECT COUNT(*) FROM foobar.items'"
    assert old.check_output(count) == probe.node(REPLICA).check_output(count)

    again, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--limit", pair)
    assert again.returncode == 0 and all(c["changed"] == 0 for c in recap.values()), (recap, again.stdout[-3000:])
