"""The wiring rendered for each stage's inventory (playbooks/wiring-render.yml, no host contacted): upstreams,
backends, database accounts, where the app reads and writes, replication, firewall rules per host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def render(stage: int, tmp_path: Path, settings: dict[str, Any] | None = None,
           added: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Each host of inventories/stage<N> at a documentation address (192.0.2.10 + its index in name order), with
    `settings` as inventory variables of all; `added` hosts ({host: group}) join the inventory at 192.0.2.200 on."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="memory", WEBSTACK_SECRETS_DIR=str(tmp_path / "secrets"))
    inventory = str(ROOT / "inventories" / f"stage{stage}")
    listed = subprocess.run(["ansible-inventory", "-i", inventory, "--list"], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True, timeout=120).stdout
    hosts = sorted({h for body in json.loads(listed).values() if isinstance(body, dict)
                    for h in body.get("hosts", [])})
    overlay = tmp_path / "addresses.json"
    more = {host: {"ansible_host": f"192.0.2.{200 + n}"} for n, host in enumerate(added or {})}
    overlay.write_text(json.dumps({"all": {"hosts": {h: {"ansible_host": f"192.0.2.{10 + n}"}
                                                     for n, h in enumerate(hosts)} | more,
                                           "vars": settings or {},
                                           "children": {group: {"hosts": {h: {} for h, g in (added or {}).items()
                                                                          if g == group}}
                                                        for group in set((added or {}).values())}}}),
                       encoding="utf-8")
    out = tmp_path / "wiring.json"
    result = subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "wiring-render.yml"), "-i", inventory,
                             "-i", str(overlay), "-e", json.dumps({"webstack_wiring_out": str(out)})],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert not (tmp_path / "secrets").exists() or not any((tmp_path / "secrets").iterdir())  # no secret made
    return dict(json.loads(out.read_text(encoding="utf-8")))


def rules(wiring: dict[str, dict[str, Any]], host: str) -> set[tuple[Any, str, str]]:
    return {(r.get("port"), r["proto"], r["from"]) for r in wiring[host]["ufw_rules"]}


def address(wiring: dict[str, dict[str, Any]], host: str) -> str:
    return str(wiring[host]["address"])


@pytest.fixture(scope="module")
def wirings(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, dict[str, Any]]]:
    dirs = {stage: tmp_path_factory.mktemp(f"stage{stage}") for stage in range(4)}
    with ThreadPoolExecutor(4) as pool:  # four ansible-playbook runs at once
        rendered = dict(zip(dirs, pool.map(lambda stage: render(stage, dirs[stage]), dirs), strict=True))
    return rendered


def test_stage0_one_host_talks_to_itself_over_loopback(wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    web = wirings[0]["web-01"]
    assert web["nginx_upstream_servers"] == ["127.0.0.1:8000"] and web["app_bind_address"] == "127.0.0.1"
    assert (web["app_db_write_host"], web["app_db_read_host"]) == ("127.0.0.1", "127.0.0.1")
    assert web["db_app_account_hosts"] == ["localhost", "127.0.0.1"] and web["replication_role"] == "none"
    assert rules(wirings[0], "web-01") == {(80, "tcp", "any")}


def test_stage1_the_lb_balances_both_web_hosts_and_the_replica_reads_locally(
        wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    w = wirings[1]
    assert [(s["name"], s["address"], s["port"]) for s in w["lb-01"]["haproxy_servers"]] == [
        ("web-01", address(w, "web-01"), 80), ("web-02", address(w, "web-02"), 80)]
    assert w["web-02"]["replication_role"] == "replica" and w["web-02"]["replication_primary"] == address(w, "web-01")
    assert (w["web-02"]["app_db_write_host"], w["web-02"]["app_db_read_host"]) == (address(w, "web-01"), "127.0.0.1")
    # The primary's app account: its own app over loopback and the other web host's app by address.
    assert w["web-01"]["db_app_account_hosts"] == ["localhost", "127.0.0.1", address(w, "web-02")]
    assert rules(w, "web-01") == {(80, "tcp", address(w, "lb-01")), (3306, "tcp", address(w, "web-02"))}
    assert rules(w, "lb-01") == {(80, "tcp", "any")}
    # A web host's app is drained on the load balancer (not on nginx: it proxies to its own app only).
    assert [d["host"] for d in w["web-01"]["app_restart_drain"]] == ["lb-01"]
    assert "haproxy-server web web-01 drain" in w["web-01"]["app_restart_drain"][0]["drain"]


def test_stage3_each_tier_reaches_only_the_next(wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    w = wirings[3]
    apps, webs, lbs = ["app-01", "app-02"], ["web-01", "web-02"], ["lb-01", "lb-02"]
    mon = address(w, "mon-01")
    for web in webs:
        assert w[web]["nginx_upstream_servers"] == [f"{address(w, app)}:8000" for app in apps]
        assert rules(w, web) == {(8443, "tcp", address(w, lb)) for lb in lbs} | {(9100, "tcp", mon),
                                                                                  (9113, "tcp", mon)}
    for lb in lbs:
        assert [(s["name"], s["port"]) for s in w[lb]["haproxy_servers"]] == [("web-01", 8443), ("web-02", 8443)]
        peer = next(other for other in lbs if other != lb)
        assert (None, "vrrp", address(w, peer)) in rules(w, lb) and (443, "tcp", "any") in rules(w, lb)
    for app in apps:
        assert w[app]["app_bind_address"] == address(w, app)
        assert (w[app]["app_db_write_host"], w[app]["app_db_read_host"]) == (address(w, "db-01"), address(w, "db-02"))
        assert rules(w, app) == {(8000, "tcp", address(w, web)) for web in webs} | {(9100, "tcp", mon)}
        # Restarted and deployed drained on both web servers' nginx upstreams, not on the load balancers.
        drains = w[app]["app_restart_drain"]
        assert [d["host"] for d in drains] == webs, drains
        assert all(d["drain"].endswith(f"nginx-upstream {address(w, app)}:8000 drain --wait 10") for d in drains)
    for db in ("db-01", "db-02"):
        assert w[db]["db_app_account_hosts"] == [address(w, app) for app in apps]
    assert (3306, "tcp", address(w, "db-02")) in rules(w, "db-01")  # replication
    assert not any(r[0] == 3306 and r[2] in {address(w, h) for h in webs + lbs} for r in rules(w, "db-01"))
    assert rules(w, "mon-01") == set()  # Prometheus and Alertmanager: loopback, reached over ssh -L


def test_stage2_adds_the_monitoring_server_as_the_only_scraper(wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    w = wirings[2]
    mon = address(w, "mon-01")
    scraped = {host: {r[0] for r in rules(w, host) if r[2] == mon} for host in w if host != "mon-01"}
    assert all(9100 in ports for ports in scraped.values()), scraped
    assert all(r[2] != mon for host in ("web-01", "web-02") for r in rules(w, host) if r[0] == 80)


def test_the_site_opens_the_stats_port_the_inventory_sets(tmp_path: Path) -> None:
    """Through the wiring: haproxy_stats_bind set in an inventory moves the firewall rule with it (the wiring sets
    the role's source group, not a flow list of its own)."""
    rendered = render(2, tmp_path, {"haproxy_stats_bind": "0.0.0.0:9101"})
    mon = address(rendered, "mon-01")
    assert (9101, "tcp", mon) in rules(rendered, "lb-01") and not any(r[0] == 8404 for r in rules(rendered, "lb-01"))


def test_the_app_servers_and_only_they_reach_the_cache(wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    """Stage 2 keeps its cache on web-02 (an app server: loopback there), stage 3 on db-02; no cache group, no
    cache (stages 0 and 1)."""
    two, three = wirings[2], wirings[3]
    assert (two["web-01"]["app_cache_host"], two["web-02"]["app_cache_host"]) == (address(two, "web-02"), "127.0.0.1")
    assert two["web-02"]["redis_bind_addresses"] == ["127.0.0.1", address(two, "web-02")]
    assert {r for r in rules(two, "web-02") if r[0] in (6379, 9121)} == {
        (6379, "tcp", address(two, "web-01")), (9121, "tcp", address(two, "mon-01"))}
    apps = {address(three, "app-01"), address(three, "app-02")}
    assert {three[app]["app_cache_host"] for app in ("app-01", "app-02")} == {address(three, "db-02")}
    assert {r[2] for r in rules(three, "db-02") if r[0] == 6379} == apps
    assert not any(r[0] == 6379 for host in three if host != "db-02" for r in rules(three, host))
    assert {wirings[stage]["web-01"]["app_cache_host"] for stage in (0, 1)} == {""}


def test_one_database_server_backs_up_a_replica_where_there_is_one(
        wirings: dict[int, dict[str, dict[str, Any]]]) -> None:
    """The first replica takes the backups (the primary where there is none); metrics only where monitoring runs."""
    textfiles = "/var/lib/prometheus/node-exporter"
    assert wirings[0]["web-01"]["backup"] == {"enabled": True, "metrics_directory": ""}
    assert [w["backup"]["enabled"] for w in (wirings[1]["web-01"], wirings[1]["web-02"])] == [False, True]
    assert wirings[2]["web-02"]["backup"] == {"enabled": True, "metrics_directory": textfiles}
    assert wirings[3]["db-02"]["backup"]["enabled"] and not wirings[3]["db-01"]["backup"]["enabled"]
    assert all(w.get("backup", {}) == {} for name, w in wirings[3].items() if not name.startswith("db-"))


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, {(80, "any")}),
    ({"haproxy_tls_enabled": True}, {(80, "any"), (443, "any")}),
    ({"haproxy_firewall_stats_from_group": "scrapers"}, {(80, "any"), (8404, "scrapers")}),
    ({"haproxy_firewall_stats_from_group": "scrapers", "haproxy_stats_bind": ":9101"},
     {(80, "any"), (9101, "scrapers")}),
])
def test_a_roles_flows_are_its_variables_built_from_its_settings(
        tmp_path: Path, settings: dict[str, str], expected: set[tuple[int, str]]) -> None:
    """What a third-party playbook gets from the haproxy role alone: its exports, templated for the host."""
    playbook = tmp_path / "flows.yml"
    out = tmp_path / "flows.json"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: haproxy, tasks_from: exports, public: true}\n"
        f"    - ansible.builtin.copy: {{content: '{{{{ haproxy_firewall_flows | to_json }}}}', dest: '{out}'}}\n",
        encoding="utf-8")
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_NOCOLOR="1")
    extra = json.dumps({**settings, "ansible_python_interpreter": sys.executable})
    result = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", extra],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    flows = json.loads(out.read_text(encoding="utf-8"))
    assert {(int(f["port"]), f["from_group"]) for f in flows} == expected


def test_a_host_added_to_the_inventory_is_wired_in_and_out_by_its_groups(
        wirings: dict[int, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    """Scale by inventory (stage 3): app-03 in appservers gets a place in every upstream, database account, firewall
    rule and scrape job it needs; the rendering without it (the module's) has none of them."""
    grown = render(3, tmp_path, added={"app-03": "appservers"})
    new = address(grown, "app-03")
    for web in ("web-01", "web-02"):
        assert f"{new}:8000" in grown[web]["nginx_upstream_servers"]
        assert (8000, "tcp", address(grown, web)) in rules(grown, "app-03")
    assert (3306, "tcp", new) in rules(grown, "db-01") and new in grown["db-01"]["db_app_account_hosts"]
    assert f"{new}:9100" in grown["mon-01"]["scrape_jobs"]["node"]
    assert [d["host"] for d in grown["app-03"]["app_restart_drain"]] == ["web-01", "web-02"]
    before = wirings[3]
    assert "app-03" not in before
    assert not any(new in target for job in before["mon-01"]["scrape_jobs"].values() for target in job)
    assert len(before["mon-01"]["scrape_jobs"]["node"]) == len(before)  # one node target per host
    assert len(grown["mon-01"]["scrape_jobs"]["node"]) == len(grown)
