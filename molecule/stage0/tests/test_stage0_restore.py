"""Disaster recovery on stage 0: the database server loses its data and its local backups; a converge makes an empty
server of it again and playbooks/restore.yml puts back the backup from the copy kept on the controller. Runs after
test_stage0.py (file order): it takes the database away for a minute."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import webstack_probe as probe
from test_stage0 import HOST

testinfra_hosts = [HOST]
TABLE = "foobar.items"
WIPE = ("systemctl stop mariadb && rm -rf /var/lib/mysql /var/backups/mariadb"
        " && install -d -o mysql -g mysql -m 0755 /var/lib/mysql"
        " && mariadb-install-db --user=mysql --datadir=/var/lib/mysql > /dev/null && systemctl start mariadb")


def test_a_wiped_server_gets_its_rows_back_from_the_controllers_copy(host: Any, tmp_path: Path) -> None:
    address = probe.container_address(HOST)
    texts = [probe.unique_text("kept") for _ in range(3)]
    for text in texts:
        assert probe.request(address, "POST", "/api/items", {"text": text}).status == 201
    before = probe.table_state(host, TABLE)
    name = probe.take_backup(host)
    # The copy an operator keeps off the host (the role writes to a path: a mount of another host in production).
    subprocess.run(["docker", "cp", f"{HOST}:{probe.BACKUPS}/{name}", str(tmp_path)], check=True)

    host.check_output(WIPE)
    assert "foobar" not in host.check_output("mariadb -N -B -e 'SHOW DATABASES'")
    # The database tier converged again: an empty database, its accounts (the app keeps its password).
    probe.playbook_recap("--tags", "database")
    result, _ = probe.run_playbook(probe.ROOT / "playbooks" / "restore.yml", probe.scenario_inventory(),
                                   "-e", f"restore_from_dir={tmp_path / name}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    assert probe.table_state(host, TABLE) == before
    listed = [item["text"] for item in probe.request(address, "GET", "/api/items").json()["items"]]
    assert set(texts) <= set(listed), listed
