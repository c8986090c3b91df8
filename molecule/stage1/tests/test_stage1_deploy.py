"""Rolling deploys (playbooks/deploy.yml, rollback.yml) under a bounded load of several clients, reads and writes:
a new release reaches every app host with no failed request (and its migration adds a column the table lacks:
expand), a broken one is rolled back on the first host and stops the rollout, and a rollback returns every host to
the release it left. Ends where it started: every host on
the working copy's release, so the later tests' converges change nothing."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import webstack_probe as probe
from test_stage1 import INVENTORY, LB, PRIMARY, REPLICA, RUNNER

APP = RUNNER.get_hosts("appservers")
CLIENTS = 12


def released(host: str) -> str:
    """The release `host` runs (current's target)."""
    return str(probe.node(host).check_output("basename $(readlink -f /srv/foobar/current)")).strip()


def served_versions(address: str) -> dict[str, str]:
    """{host: release} as /version answers through the load balancer (enough requests to reach every host)."""
    versions: dict[str, str] = {}
    for _ in range(4 * len(APP)):
        reply = probe.request(address, "GET", "/version")
        versions[reply.headers["x-served-by"]] = reply.body.decode().strip()
    return versions


def load(address: str) -> AbstractContextManager[list[probe.LoadLoop]]:
    """CLIENTS clients at once, each a request every 0.05 s, every 30th a POST (bounded: 3,000 requests each). 240
    requests and 8 writes a second: under this scenario's per-client limits (3,000 per 10 s at the load balancer,
    10 writes a second at nginx), all from this one client address."""
    return probe.load_clients(address, CLIENTS, interval=0.05, limit=3000, timeout=15, write_every=30)


def has_key_column(host: str) -> bool:
    """Whether `host`'s items table has the idempotency_key column (the app's one expand migration)."""
    return "idempotency_key" in probe.node(host).check_output(
        "mysql -N -B -e \"SHOW COLUMNS FROM foobar.items LIKE 'idempotency_key'\"")


def code_base(tmp_path: Path, name: str, change: str) -> Path:
    """A copy of the working copy's app/ with `change` appended to its WSGI module (a new release id)."""
    return probe.code_base(tmp_path / name, change)


def deploy(playbook: str, *extra: str) -> tuple[int, str]:
    inventory = str(Path(INVENTORY).parent)
    result, _ = probe.run_playbook(probe.ROOT / "playbooks" / playbook, inventory, *extra)
    return result.returncode, result.stdout + result.stderr


def summary(loops: list[probe.LoadLoop]) -> tuple[int, list[probe.Outcome]]:
    outcomes = probe.outcomes_of(loops)
    return len(outcomes), [o for o in outcomes if not o.ok]


def test_a_rolling_deploy_a_broken_release_and_a_rollback_cost_no_request(tmp_path: Path) -> None:
    address = probe.container_address(LB)
    start = {host: released(host) for host in APP}
    assert len(set(start.values())) == 1, start
    good = code_base(tmp_path, "good", "\n# a new release\n")
    broken = code_base(tmp_path, "broken", "\nraise RuntimeError('a release that cannot start')\n")

    # Expand with a real column: the table goes back to its schema from before Idempotency-Key (the replica
    # follows). The running code works on both schemas (it names the column only for a request with the header,
    # which this load never sends); the deploy's migration, run once before the first host switches, adds it back.
    probe.node(PRIMARY).check_output("mysql -e 'ALTER TABLE foobar.items DROP INDEX uq_items_idempotency_key, "
                                     "DROP COLUMN idempotency_key'")
    assert probe.wait_for(lambda: not has_key_column(REPLICA), timeout=15)
    with load(address) as loops:
        rc, out = deploy("deploy.yml", "-e", f"deploy_source_dir={good}")
    total, failed = summary(loops)
    print(f"deploy: {total} requests from {CLIENTS} clients, {len(failed)} failed")
    assert rc == 0, out[-4000:]
    assert total >= 2000 and failed == [], (total, failed[:5])
    assert has_key_column(PRIMARY) and probe.wait_for(lambda: has_key_column(REPLICA), timeout=15)
    keyed = {"Idempotency-Key": probe.unique_text("expand")}
    first = probe.request(address, "POST", "/api/items", {"text": "expanded"}, headers=keyed)
    again = probe.request(address, "POST", "/api/items", {"text": "expanded"}, headers=keyed)
    assert (first.status, again.status) == (201, 200) and first.json()["id"] == again.json()["id"], (first, again)
    new = {host: released(host) for host in APP}
    assert len(set(new.values())) == 1 and set(new.values()) != set(start.values()), (start, new)
    assert served_versions(address) == new

    with load(address) as loops:
        rc, out = deploy("deploy.yml", "-e", f"deploy_source_dir={broken}", "-e", "app_restart_wait_seconds=10")
    total, failed = summary(loops)
    print(f"broken release: {total} requests, {len(failed)} failed")
    assert rc != 0 and "did not answer /healthz with 200" in out and "Stop the rollout" in out, out[-4000:]
    assert failed == [], failed[:5]
    # The first host went back, the second was never touched: both serve the release of the good deploy.
    assert {host: released(host) for host in APP} == new
    assert served_versions(address) == new

    with load(address) as loops:
        rc, out = deploy("rollback.yml")
    total, failed = summary(loops)
    print(f"rollback: {total} requests, {len(failed)} failed")
    assert rc == 0 and failed == [], (out[-4000:], failed[:5])
    assert {host: released(host) for host in APP} == start
    assert served_versions(address) == start
