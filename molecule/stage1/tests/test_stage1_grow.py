"""Scaling the web and app tiers by inventory (stage 1, where each web server is also an app server), under a bounded
load through the load balancer with writes. A new host (a bare container, in no group) is added to webservers and
appservers by an inventory file of the operator's, outside the repository: one site.yml run brings it into service
(its database account on both database servers, the primary's firewall opening, the HAProxy backend by reload) and
it then serves requests. The next run without that file takes it out: drained on the load balancer first, then its
rule and accounts go. The same two runs change app settings and restore them, so the other hosts reload and
restart gunicorn (drained, one at a time) meanwhile. No request fails in either run. Runs after the
failure tests and before the operator tests (file order: their vault run changes the secrets this scenario's
inventory holds), and leaves the stage as it found it."""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import webstack_probe as probe
import yaml
from test_stage1 import INVENTORY, LB, PRIMARY, REPLICA, WEB

SPARE = "webstack-m1-web-03"
SPARE_ADDRESS = "10.251.1.23"  # beside the platforms' fixed addresses (molecule.yml)
IMAGE = f"webstack-debian:{os.environ.get('WEBSTACK_DEBIAN_EDGE', 'trixie')}-v1"
CLIENTS = 2
SITE = probe.ROOT / "site.yml"
# Changed with the scale-out, restored with the scale-in: gunicorn reloads (app.json) and restarts (threads: the
# unit), each host drained on the load balancer first. (A MariaDB option would restart the primary: writes answer
# 503 while it is down, by design.)
SETTINGS = {"app_items_limit": 19, "app_threads": 3}


@pytest.fixture(scope="module")
def lb() -> str:
    return str(probe.container_address(LB))


def scale_out_inventory(tmp_path: Path) -> Path:
    path = tmp_path / "scale-out.yml"
    path.write_text(yaml.safe_dump({"all": {
        "hosts": {SPARE: {"ansible_connection": "docker"}},
        "children": {"webservers": {"hosts": {SPARE: None}}, "appservers": {"hosts": {SPARE: None}}},
    }}), encoding="utf-8")
    return path


def load(address: str) -> AbstractContextManager[list[probe.LoadLoop]]:
    """CLIENTS clients, each a request every 0.05 s and every 20th a POST (bounded: 6,000 requests each)."""
    return probe.load_clients(address, CLIENTS, interval=0.05, limit=6000, timeout=15, write_every=20)


def converged_under_load(address: str, *extra: str) -> tuple[dict[str, dict[str, int]], int, list[probe.Outcome], str]:
    """site.yml with the scenario's inventory and `extra` arguments under load: recap, requests, failed, output."""
    with load(address) as loops:
        result, recap = probe.run_playbook(SITE, str(Path(INVENTORY).parent), *extra)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    outcomes = probe.outcomes_of(loops)
    return recap, len(outcomes), [o for o in outcomes if o.status not in (200, 201)], result.stdout


def served_by(address: str, requests: int = 12) -> set[str]:
    return {probe.request(address, "GET", "/").headers["x-served-by"] for _ in range(requests)}


def account_hosts(server: str) -> set[str]:
    query = "SELECT Host FROM mysql.user WHERE User = 'foobar'"
    return set(probe.node(server).check_output(f'mariadb -N -B -e "{query}"').split())


def test_a_new_host_joins_both_tiers_and_leaves_them_without_a_failed_request(lb: str, tmp_path: Path) -> None:
    primary = probe.container_address(PRIMARY)
    with probe.spare_container(SPARE, "web-03", "webstack-m1", SPARE_ADDRESS, IMAGE):
        assert probe.scan(SPARE, [(primary, 3306)]) == {f"{primary}:3306": "filtered"}

        recap, total, failed, _ = converged_under_load(lb, "-i", str(scale_out_inventory(tmp_path)),
                                                       "-e", json.dumps(SETTINGS))
        print(f"scale-out: {total} requests from {CLIENTS} clients, {len(failed)} failed")
        assert total >= 1000 and failed == [], (total, [(o.status, o.error) for o in failed[:5]])
        assert all(recap[web]["changed"] >= 2 for web in WEB), recap  # the settings reached the other hosts
        assert probe.wait_for(lambda: SPARE in served_by(lb), timeout=20)  # the new host receives traffic
        assert SPARE_ADDRESS in account_hosts(PRIMARY) and SPARE_ADDRESS in account_hosts(REPLICA)
        assert probe.scan(SPARE, [(primary, 3306)]) == {f"{primary}:3306": "open"}

        recap, total, failed, out = converged_under_load(lb)
        print(f"scale-in: {total} requests from {CLIENTS} clients, {len(failed)} failed")
        assert total >= 1000 and failed == [], (total, [(o.status, o.error) for o in failed[:5]])
        assert all(recap[web]["changed"] >= 2 for web in WEB), recap  # the settings restored
        # Drained and put in MAINT early in the run (before the firewalls and databases cut it off), then dropped
        # by the reload.
        assert f"item=web {SPARE}" in out, out[-4000:]
        assert SPARE not in probe.node(LB).check_output("/usr/local/sbin/haproxy-server --list")
        assert SPARE not in served_by(lb, 24)
        assert SPARE_ADDRESS not in account_hosts(PRIMARY) | account_hosts(REPLICA)
        assert probe.scan(SPARE, [(primary, 3306)]) == {f"{primary}:3306": "filtered"}
    assert probe.request(lb, "GET", "/api/items").status == 200
