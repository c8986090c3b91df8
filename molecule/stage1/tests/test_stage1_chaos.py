"""Stage 1 chaos: each host killed, then cut off the network, under a bounded load; what the clients saw is
compared with the design report of the same inventory (make design). Results: build/chaos/molecule-stage1.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import webstack_probe as probe
from test_stage1 import INVENTORY, LB

sys.path.insert(0, str(probe.ROOT / "tools"))

import chaos
import design

testinfra_hosts = [LB]


def test_each_hosts_loss_does_what_the_design_report_says(tmp_path: Path) -> None:
    model = design.collect(Path(INVENTORY).parent, tmp_path / "model.json")
    assert design.spofs(model)["site down"] == [LB]  # the report this run checks
    target = chaos.Target(model, {host: host for host in model["hosts"]}, probe.container_address(LB))
    results = chaos.run(target, sorted(model["hosts"]), chaos.MODES,
                        report=lambda r: print(f"{r['host']} {r['mode']}: {r['observed']}; {r['why']}"))
    chaos.write(results, probe.ROOT / "build" / "chaos" / "molecule-stage1", "stage 1 (Molecule)")
    print(chaos.table(results))
    if not all(r["ok"] for r in results):
        pytest.fail("a host's loss did not do what the design report says:\n" + chaos.table(results))
    # With the primary gone, a write gets a clear 503 quickly, never a hang: at worst HAProxy's connect timeout to
    # the gone host (1 s) before it tries the other, then the app's app_db_connect_timeout (1.5 s); after that,
    # 503 at once for 2 s. (One in flight at the instant of the loss may get 504 after HAProxy's timeout server.)
    for result in (r for r in results if r["effect"] == design.WRITES_DOWN):
        assert list(result["failed_write_statuses"]) == [503] and result["slowest_failed_write_s"] < 4, result
