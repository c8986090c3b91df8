"""Scaling the web and app tiers by inventory (stage 2, where each web server is also an app server), under a bounded
load through the load balancer with writes. A spare host (booted by prepare.yml, in no group) is added to webservers
and appservers by an inventory file of its own: one site.yml run brings it into service (its database account, the
database and cache hosts' firewall rules, the HAProxy backend by reload, its Prometheus targets) and it then serves
requests. The next run without that file takes it out: drained on the load balancer first, then its rules, account
and targets go. No request fails in either run. Runs after test_monitoring.py (file order) and leaves the stage as it
found it (the spare host keeps running, out of the inventory)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import webstack_probe as probe
import yaml
from test_firewall import MON, PRIMARY, REPLICA, RUNNER

SPARE = "webstack-m2-web-03"
CACHE = RUNNER.get_hosts("cache")[0]
CLIENTS = 3
SITE = probe.ROOT / "site.yml"


def scale_out_inventory(tmp_path: Path) -> Path:
    """An inventory file of the operator's (outside the repository) that adds the spare host to both tiers."""
    path = tmp_path / "scale-out.yml"
    path.write_text(yaml.safe_dump({"all": {
        "hosts": {SPARE: {"ansible_connection": "docker"}},
        "children": {"webservers": {"hosts": {SPARE: None}}, "appservers": {"hosts": {SPARE: None}}},
    }}), encoding="utf-8")
    return path


@contextmanager
def load(address: str, cafile: str) -> Iterator[list[probe.LoadLoop]]:
    """CLIENTS clients over HTTPS, each a request every 0.05 s and every 20th a POST (bounded: 6,000 requests
    each)."""
    with ExitStack() as stack:
        yield [stack.enter_context(probe.LoadLoop(address, interval=0.05, limit=6000, timeout=15, write_every=20,
                                                  cafile=cafile))
               for _ in range(CLIENTS)]


def converged_under_load(address: str, cafile: str, *inventory: str) -> tuple[int, list[probe.Outcome]]:
    """site.yml with the scenario's inventory (and `inventory` sources on top) under load: requests, failed ones."""
    extra = [arg for source in inventory for arg in ("-i", source)]
    with load(address, cafile) as loops:
        result, _ = probe.run_playbook(SITE, probe.scenario_inventory(), *extra)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    outcomes = [o for loop in loops for o in loop.finished()]
    return len(outcomes), [o for o in outcomes if o.status not in (200, 201)]


def served_by(address: str, cafile: str, requests: int = 12) -> set[str]:
    return {probe.request(address, "GET", "/", cafile=cafile).headers["x-served-by"] for _ in range(requests)}


def account_hosts(server: str) -> set[str]:
    query = "SELECT Host FROM mysql.user WHERE User = 'foobar'"
    return set(probe.node(server).check_output(f'mariadb -N -B -e "{query}"').split())


def scrape_instances() -> set[str]:
    """The addresses Prometheus scrapes (active targets of every job)."""
    reply = probe.node(MON).check_output("curl -fsS http://127.0.0.1:9090/api/v1/targets?state=active")
    targets = json.loads(reply)["data"]["activeTargets"]
    return {t["labels"]["instance"].rsplit(":", 1)[0] for t in targets}


def test_a_spare_host_joins_both_tiers_and_leaves_them_without_a_failed_request(lb: str, pebble_root: str,
                                                                                 tmp_path: Path) -> None:
    spare = probe.container_address(SPARE)
    primary, cache = probe.container_address(PRIMARY), probe.container_address(CACHE)
    reach = [(primary, 3306), (cache, 6379)]
    assert set(probe.scan(SPARE, reach).values()) == {"filtered"}

    total, failed = converged_under_load(lb, pebble_root, str(scale_out_inventory(tmp_path)))
    print(f"scale-out: {total} requests from {CLIENTS} clients, {len(failed)} failed")
    assert total >= 1000 and failed == [], (total, [(o.status, o.error) for o in failed[:5]])
    assert probe.wait_for(lambda: SPARE in served_by(lb, pebble_root), timeout=20)  # the new host receives traffic
    assert spare in account_hosts(PRIMARY) and spare in account_hosts(REPLICA)
    assert set(probe.scan(SPARE, reach).values()) == {"open"}
    assert probe.wait_for(lambda: spare in scrape_instances(), timeout=20)

    total, failed = converged_under_load(lb, pebble_root)
    print(f"scale-in: {total} requests from {CLIENTS} clients, {len(failed)} failed")
    assert total >= 1000 and failed == [], (total, [(o.status, o.error) for o in failed[:5]])
    assert SPARE not in served_by(lb, pebble_root, 24)
    assert spare not in account_hosts(PRIMARY) | account_hosts(REPLICA)
    assert set(probe.scan(SPARE, reach).values()) == {"filtered"}
    assert probe.wait_for(lambda: spare not in scrape_instances(), timeout=20)
    assert probe.request(lb, "GET", "/api/items", cafile=pebble_root).status == 200
