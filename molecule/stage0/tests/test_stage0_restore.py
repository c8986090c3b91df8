"""Disaster recovery on stage 0: the database server is lost for good, its local backups with it. A new machine from
the bare image takes its place (name and address), site.yml converges it from nothing, and playbooks/restore.yml puts
back the backup from the copy kept on the controller. Runs after test_stage0.py (file order), last: the host it
leaves is the new one."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import webstack_probe as probe
from test_stage0 import HOST

testinfra_hosts = [HOST]
TABLE = "foobar.items"


def test_a_new_machine_gets_the_lost_servers_rows_from_the_controllers_copy(host: Any, tmp_path: Path) -> None:
    address = probe.container_address(HOST)
    texts = [probe.unique_text("kept") for _ in range(3)]
    for text in texts:
        assert probe.request(address, "POST", "/api/items", {"text": text}).status == 201
    before = probe.table_state(host, TABLE)
    name = probe.take_backup(host)
    # The copy an operator keeps off the host (the role writes to a path: a mount of another host in production).
    subprocess.run(["docker", "cp", f"{HOST}:{probe.BACKUPS}/{name}", str(tmp_path)], check=True)

    probe.replace_container(HOST)
    assert host.run("command -v mariadb").rc != 0  # a bare machine: nothing of the old one is left
    # The whole site converged onto it: an empty database and its accounts (the app keeps its password: the
    # controller holds the generated secrets), then the backup.
    probe.playbook_recap()
    assert probe.table_state(host, TABLE)[0] == 0
    result, _ = probe.run_playbook(probe.ROOT / "playbooks" / "restore.yml", probe.scenario_inventory(),
                                   "-e", f"restore_from_dir={tmp_path / name}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    assert probe.table_state(host, TABLE) == before
    assert probe.container_address(HOST) == address
    listed = [item["text"] for item in probe.request(address, "GET", "/api/items").json()["items"]]
    assert set(texts) <= set(listed), listed
