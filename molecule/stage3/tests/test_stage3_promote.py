"""Stage 3's database primary lost, under a bounded write load: playbooks/promote.yml makes the replica the primary,
writes succeed again, and every write the site acknowledged is on the new primary (semi-synchronous replication);
a converge before the inventory edit stops before it changes anything.

Runs after test_stage3.py (file order) and last: the scenario has no primary afterwards."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import webstack_probe as probe
from test_stage3 import APP, INVENTORY, LBS, REPLICA, RUNNER, VIP

PRIMARY = RUNNER.get_hosts("db_primary")[0]

testinfra_hosts = [LBS[0]]


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


def test_promoting_the_replica_after_the_primary_is_killed_keeps_every_acknowledged_write(root: str) -> None:
    inventory = str(Path(INVENTORY).parent)
    # While the primary answers, the playbook refuses (its clients may still write there) and changes nothing.
    refused, recap = probe.run_playbook(probe.ROOT / "playbooks" / "promote.yml", inventory)
    assert refused.returncode != 0 and "promote_fence=true" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap

    writer = Writer(root)
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

    # Before the inventory edit, a converge (here one of just the app tier, as an operator might run) would point
    # the app servers back at the old primary: it stops before any change, naming the edit.
    app_config = {host: probe.node(host).check_output("cat /etc/foobar/app.json") for host in APP}
    stopped, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--tags", "app")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and f"{REPLICA} was promoted to primary" in output, output[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap
    assert {host: probe.node(host).check_output("cat /etc/foobar/app.json") for host in APP} == app_config
    assert all(probe.container_address(REPLICA) in config for config in app_config.values()), app_config
