"""Stage 3's database primary lost, under a bounded write load: playbooks/promote.yml makes the replica the primary,
writes succeed again, and every write the site acknowledged is on the new primary (semi-synchronous replication).

Runs after test_stage3.py (file order) and last: the scenario has no primary afterwards."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import webstack_probe as probe
from test_stage3 import EPHEMERAL, INVENTORY, LBS, REPLICA, RUNNER, VIP

PRIMARY = RUNNER.get_hosts("db_primary")[0]

testinfra_hosts = [LBS[0]]


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pebble's issuing root (the site's certificate chain), trusted only inside this test."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_bytes(probe.pebble_root("webstack-m3-pebble", EPHEMERAL / "pebble-listener-ca.pem"))
    return str(path)


@dataclass
class Writer:
    """POSTs a new item through the VIP every `interval` s in a thread, at most `limit`; records the acknowledged ids
    with when their answer came, and the failures."""

    cafile: str
    interval: float = 0.1
    limit: int = 1500
    acknowledged: list[tuple[float, int]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                reply = probe.request(VIP, "POST", "/api/items", {"text": probe.unique_text("promote")}, timeout=10,
                                      cafile=self.cafile)
                if reply.status == 201:
                    self.acknowledged.append((time.monotonic(), int(reply.json()["id"])))
                else:
                    self.failed.append(str(reply.status))
            except OSError as exc:
                self.failed.append(repr(exc))
            self.stop.wait(self.interval)

    def acknowledged_after(self, moment: float) -> bool:
        return any(at > moment for at, _ in self.acknowledged)


def test_promoting_the_replica_after_the_primary_is_killed_keeps_every_acknowledged_write(cafile: str) -> None:
    inventory = str(Path(INVENTORY).parent)
    # While the primary answers, the playbook refuses (its clients may still write there) and changes nothing.
    refused, recap = probe.run_playbook(probe.ROOT / "playbooks" / "promote.yml", inventory)
    assert refused.returncode != 0 and "promote_fence=true" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap

    writer = Writer(cafile)
    writer.thread.start()
    try:
        assert probe.wait_for(lambda: len(writer.acknowledged) >= 20, timeout=30), writer.failed[-5:]
        subprocess.run(["docker", "kill", PRIMARY], check=True, capture_output=True)  # not started again
        killed = time.monotonic()
        promoted, recap = probe.run_playbook(probe.ROOT / "playbooks" / "promote.yml", inventory)
        assert promoted.returncode == 0, promoted.stdout[-4000:]
        done = time.monotonic()
        assert probe.wait_for(lambda: writer.acknowledged_after(done), timeout=30), writer.failed[-5:]
        print(f"promotion: {len(writer.acknowledged)} writes acknowledged, {len(writer.failed)} failed; "
              f"kill to promoted {done - killed:.1f} s; first write after the kill acknowledged "
              f"{min(at for at, _ in writer.acknowledged if at > killed) - killed:.1f} s after it")
    finally:
        writer.stop.set()
        writer.thread.join(timeout=30)

    on_new_primary = {int(row) for row in probe.node(REPLICA).check_output(
        "mysql -N -B -e 'SELECT id FROM foobar.items'").split()}
    before_kill = {item for at, item in writer.acknowledged if at <= killed}
    assert before_kill and before_kill <= on_new_primary, sorted(before_kill - on_new_primary)
    assert {item for _, item in writer.acknowledged} <= on_new_primary
    assert probe.node(REPLICA).check_output("mysql -N -B -e 'SELECT @@global.read_only'") == "0"
    assert probe.node(REPLICA).check_output("mysql -N -B -e 'SHOW SLAVE STATUS'") == ""
    assert "read_only = OFF" in probe.node(REPLICA).check_output("cat /etc/mysql/mariadb.conf.d/60-webstack.cnf")
    assert f"{REPLICA} is the primary" in promoted.stdout
