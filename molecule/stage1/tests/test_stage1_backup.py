"""Backups on stage 1: the replica takes them (the primary does not), checksummed; playbooks/restore.yml reads the
newest from the replica and restores it on the primary, and the replica receives the restore through replication.
Runs after test_stage1.py (file order)."""

from __future__ import annotations

import webstack_probe as probe
from test_stage1 import LB, PRIMARY, REPLICA

testinfra_hosts = [LB]
TABLE = "foobar.items"
RESTORE = probe.ROOT / "playbooks" / "restore.yml"


def test_the_replicas_backup_restores_the_rows_on_the_primary_and_through_replication() -> None:
    primary, replica = probe.node(PRIMARY), probe.node(REPLICA)
    assert replica.service("webstack-backup.timer").is_enabled
    assert not primary.file("/etc/systemd/system/webstack-backup.timer").exists  # one host backs up
    lb = probe.container_address(LB)
    for _ in range(5):
        assert probe.request(lb, "POST", "/api/items", {"text": probe.unique_text("backed-up")}).status == 201
    before = probe.table_state(primary, TABLE)
    assert probe.wait_for(lambda: probe.table_state(replica, TABLE) == before, timeout=30)
    name = probe.take_backup(replica)

    # Lost on the primary, and so on the replica too: what a backup is for.
    primary.check_output(f"mariadb -e 'DROP TABLE {TABLE}'")
    assert probe.wait_for(lambda: replica.run(f"mariadb -e 'SELECT 1 FROM {TABLE} LIMIT 1'").rc != 0, timeout=30)
    result, _ = probe.run_playbook(RESTORE, probe.scenario_inventory(), "-e", f"restore_backup={name}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    assert probe.table_state(primary, TABLE) == before
    assert probe.wait_for(lambda: replica.run(f"mariadb -e 'SELECT 1 FROM {TABLE} LIMIT 1'").rc == 0
                          and probe.table_state(replica, TABLE) == before, timeout=30)
    assert probe.request(lb, "GET", "/api/items").status == 200


def test_a_restore_onto_the_replica_is_refused() -> None:
    result, _ = probe.run_playbook(RESTORE, probe.scenario_inventory(), "-e", f"restore_to={REPLICA}")
    # The message is on stderr too (Ansible's [ERROR] lines), and may be folded over lines.
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "is read-only" in output and "Copy the backup" not in output, output[-3000:]
