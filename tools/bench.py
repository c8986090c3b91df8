#!/usr/bin/env python3
"""Benchmarks (never timed tests): serving through the LB vs one server, and converge vs package floor.

    python tools/bench.py --out build/bench.json            # every part, stage 1 lab
    python tools/bench.py --stage 3 --out build/bench.json  # every part, stage 3 lab (added to the same file)
    python tools/bench.py --only serving --duration 10

Results go under "stage<n>" in the --out file (the other stages' results are kept).
Stage 3 adds: the re-encryption cost (HTTPS through the VIP with and without TLS from the load balancers to the
web servers) and the VIP failover per failure (HAProxy stopped, holder killed, holder cut off) for the default
VRRP settings and the tuned ones (VRRPv3, 0.25 s adverts), each with requests started every 0.05 s.

Serving: wrk (Debian package) from the controller, bounded by --duration, against one web server
directly and against the load balancer, and the write latency semi-synchronous replication costs (200 POSTs
with it, 200 with it switched off on the primary) and, where the stage has a cache group, the cache: 4 clients x
500 requests (every 10th a POST) counted by X-Cache (hit ratio, latency per state), the same reads with Redis
stopped, and Redis killed then frozen for 6 s under a bounded load (failed requests). Failover: GETs (10/s) through
the load balancer while the primary's host is cut off the network (docker network disconnect), and the POST
latency meanwhile. Converge: the raw `apt-get install` time of each host's packages on fresh containers (the floor)
vs a fresh `make lab` converge, and an idempotent re-run. Deploy: a rolling deploy of a new release and the
rollback, each under 4 clients through the entry host (wall time for the app tier and per host, requests, failed).
Scale: a spare container joins the app tier (the web and app tiers below stage 3) by an inventory file of its own,
then leaves, each site.yml run timed under the same load (requests, failed, the new host's share of reads).
Promote (stage 3, or --only promote): the primary's container killed under a write load (a POST every 0.1 s),
promote.yml, the time from the kill to the first write taken and the acknowledged writes the new primary lacks; the
old primary re-joined as a replica; a planned switch back (promote_fence=true) under the same load, and the fenced
server re-seeded and the app tier converged (its reads back on the replica), so the lab ends as it began.
Traffic goes only to the lab's own containers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "filter_plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import lab
import webstack
import webstack_probe as probe

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p99 latency (ms) and error count from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if not rps or not p99:
        raise ValueError("unexpected wrk output:\n" + output)
    errors = 0
    for match in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in match.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * UNITS[p99.group(2)], "errors": errors}


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
                          "-H", "Host: www.foobar.com", url],
                         capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    return parse_wrk(out)


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True, env=env,
                       capture_output=True)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


@contextmanager
def opened_to_controller(container: str, port: int, stage: int) -> Iterator[None]:
    """Let the controller (the lab network's gateway) reach `port` of a container for the block: the web servers'
    firewall admits only the load balancers, and the bench measures one of them directly too."""
    gateway = str(next(ipaddress.ip_network(lab.subnet(stage)).hosts()))  # docker's default: the first address
    rule = ["allow", "proto", "tcp", "from", gateway, "to", "any", "port", str(port)]
    subprocess.run(["docker", "exec", container, "ufw", "insert", "1", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["docker", "exec", container, "ufw", "delete", *rule], check=False, capture_output=True)


def serving(stage: int, duration: int, connections: int) -> dict[str, Any]:
    ensure_wrk()
    if stage >= 3:
        return reencryption(stage, duration, connections)
    hosts = lab.load_hosts(stage)
    entry = lab.entry_host(hosts)
    web = next(h for h in hosts if "webservers" in h.groups)
    lb_addr = lab.container_address(stage, entry.name)
    web_addr = lab.container_address(stage, web.name)
    result: dict[str, Any] = {"duration_s": duration, "connections": connections, "path": "/api/items"}
    with opened_to_controller(web.container, 80, stage):  # the web servers' firewall admits the LB only
        result["direct_one_server"] = wrk(f"http://{web_addr}/api/items", duration, connections)
    result["through_lb"] = wrk(f"http://{lb_addr}/api/items", duration, connections)
    result["lb_vs_direct_ratio"] = round(result["through_lb"]["rps"] / result["direct_one_server"]["rps"], 3)
    return result


def reencryption(stage: int, duration: int, connections: int) -> dict[str, Any]:
    """HTTPS through the VIP with TLS from the load balancers to the web servers (the stage's setting) and
    without it (converged with webstack_backend_tls false, then back): what re-encryption costs."""
    url = f"https://{lab.entry_address(stage)}/api/items"
    result: dict[str, Any] = {"duration_s": duration, "connections": connections, "url": url}
    result["reencrypted"] = wrk(url, duration, connections)
    try:
        converge_lab(stage, {"webstack_backend_tls": False})
        result["plain_to_web"] = wrk(url, duration, connections)
    finally:
        converge_lab(stage, {})
    result["reencrypted_vs_plain_rps"] = round(result["reencrypted"]["rps"] / result["plain_to_web"]["rps"], 3)
    return result


# VRRP settings compared by the VIP failover bench: the role's defaults and the tuned ones.
VRRP_MODES: dict[str, dict[str, Any]] = {
    "vrrp2_advert_1s": {"webstack_vrrp_version": 2, "webstack_vrrp_advert_int": 1},
    "vrrp3_advert_0.25s": {"webstack_vrrp_version": 3, "webstack_vrrp_advert_int": 0.25},
}


def vip_failover(stage: int) -> dict[str, Any]:
    """Per VRRP mode and failure of the VIP holder: requests, failed, longest time nobody was answered."""
    vip = lab.entry_address(stage)
    lbs = [h.container for h in lab.load_hosts(stage) if "loadbalancers" in h.groups]
    root = str(lab.pebble_root(stage))
    results: dict[str, Any] = {"vip": vip, "request_every_s": 0.05, "request_timeout_s": 2}
    try:
        for mode, settings in VRRP_MODES.items():
            converge_lab(stage, settings, "--limit", "loadbalancers")
            probe.wait_for_holder(lbs, vip, lbs[0], timeout=60)
            results[mode] = {}
            for case in probe.VIP_LOSSES:
                load = probe.lose_vip_holder(case, lbs, vip, vip, cafile=root)
                results[mode][case] = {"requests": len(load.outcomes), "failed": len(load.failed),
                                       "max_gap_s": round(load.max_gap, 2)}
                print(f"{mode} {case}: {load.summary()}", file=sys.stderr)
                probe.wait_for_holder(lbs, vip, lbs[0], timeout=60)
    finally:
        converge_lab(stage, {}, "--limit", "loadbalancers")
    results["hard_loss_target_s"] = 1.5
    results["hard_loss_target_met"] = {
        mode: all(results[mode][case]["max_gap_s"] <= 1.5 for case in ("holder-killed", "holder-cut-off"))
        for mode in VRRP_MODES}
    return results


def entry_and_primary(stage: int) -> tuple[str, str | None, lab.LabHost]:
    """A stage lab's entry address, the CA file to verify it with (HTTPS from stage 2 on) and its primary's host."""
    cafile = str(lab.pebble_root(stage)) if stage >= 2 else None
    primary = next(h for h in lab.load_hosts(stage) if "db_primary" in h.groups)
    return lab.entry_address(stage), cafile, primary


def primary_blackholed(stage: int, seconds: float = 10.0) -> dict[str, Any]:
    """GETs through the entry host (10/s) while the primary's host is cut off the network; POST latency then."""
    entry, cafile, primary = entry_and_primary(stage)
    posts: list[dict[str, Any]] = []
    with probe.LoadLoop(entry, interval=0.1, timeout=20, limit=int(seconds * 10) + 400,
                        cafile=cafile) as loop:
        time.sleep(2)
        with probe.disconnected(primary.container):
            time.sleep(seconds / 2)
            for _ in range(3):
                start = time.monotonic()
                status = probe.request(entry, "POST", "/api/items", {"text": probe.unique_text("bench")},
                                       timeout=10, cafile=cafile).status
                posts.append({"status": status, "seconds": round(time.monotonic() - start, 2)})
            time.sleep(seconds / 2)
        time.sleep(5)
    return {"host": primary.name, "cut_off_s": seconds, "gets": len(loop.outcomes), "get_failures": len(loop.failed),
            "longest_gap_s": round(loop.max_gap, 2),
            "slowest_get_s": round(max(o.seconds for o in loop.outcomes), 2), "posts_while_cut_off": posts}


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Median, 95th percentile and worst of request durations, in milliseconds."""
    ordered = sorted(seconds)

    def pick(quantile: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))], 2)

    return {"count": len(ordered), "p50_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": pick(1.0)}


def semi_sync_cost(stage: int, writes: int = 200) -> dict[str, Any]:
    """POST latency through the entry host with semi-synchronous replication on (the default) and switched off on the
    primary for the measurement (then on again): what waiting for a replica's acknowledgement costs a write."""
    entry, cafile, primary = entry_and_primary(stage)

    def semi_sync(value: str) -> None:
        lab.sh(["docker", "exec", primary.container, "mysql", "-e",
                f"SET GLOBAL rpl_semi_sync_master_enabled = {value}"])

    def posts() -> dict[str, float]:
        durations = []
        for _ in range(writes):
            start = time.monotonic()
            status = probe.request(entry, "POST", "/api/items", {"text": probe.unique_text("bench")}, timeout=10,
                                   cafile=cafile).status
            if status == 201:
                durations.append(time.monotonic() - start)
        return latency_summary(durations)

    semi_sync("ON")
    on = posts()
    try:
        semi_sync("OFF")
        off = posts()
    finally:
        semi_sync("ON")
    return {"writes_each": writes, "semi_sync": on, "asynchronous": off,
            "p50_cost_ms": round(on["p50_ms"] - off["p50_ms"], 2)}


def cache_effect(stage: int, clients: int = 4, each: int = 500) -> dict[str, Any] | None:
    """Through the entry host: `clients` concurrent clients, `each` requests apiece, every 10th a POST; the share of
    GETs the cache answered (X-Cache) and their latency against the database's. Then Redis killed and frozen for 6 s
    under a bounded load: the requests that failed (the app must read the database meanwhile)."""
    hosts = lab.load_hosts(stage)
    cache = next((h for h in hosts if "cache" in h.groups), None)
    if cache is None:
        return None
    entry, cafile, _ = entry_and_primary(stage)

    def client(_: int) -> list[tuple[str, float, int]]:
        seen = []
        for index in range(each):
            start = time.monotonic()
            if index % 10 == 9:
                reply = probe.request(entry, "POST", "/api/items", {"text": probe.unique_text("bench")}, timeout=10,
                                      cafile=cafile)
                seen.append(("POST", time.monotonic() - start, reply.status))
            else:
                reply = probe.request(entry, "GET", "/api/items", timeout=10, cafile=cafile)
                seen.append((reply.headers.get("x-cache", "none"), time.monotonic() - start, reply.status))
        return seen

    def run_clients() -> list[tuple[str, float, int]]:
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            return [one for part in pool.map(client, range(clients)) for one in part]

    seen = run_clients()
    gets = [(state, seconds) for state, seconds, _ in seen if state != "POST"]
    by_state = {state: [s for st, s in gets if st == state] for state in sorted({st for st, _ in gets})}

    # The same reads without the cache (Redis stopped: every GET reads the database), for comparison.
    with probe.service_stopped(cache.container, "redis-server"):
        uncached = [seconds for state, seconds, _ in run_clients() if state != "POST"]

    with probe.LoadLoop(entry, interval=0.05, limit=600, write_every=5, cafile=cafile, timeout=10) as load:
        probe.crash_then_hang(cache.container, "redis-server")
    return {"host": cache.name, "requests": len(seen), "failed": sum(1 for *_, status in seen if status >= 500),
            "gets": len(gets), "hit_ratio": round(len(by_state.get("HIT", [])) / max(1, len(gets)), 3),
            "latency_by_state": {state: latency_summary(values) for state, values in by_state.items()},
            "latency_without_cache": latency_summary(uncached),
            "redis_killed_then_frozen": {"requests": len(load.outcomes), "failed": len(load.failed),
                                         "max_gap_s": round(load.max_gap, 2)}}


def playbook_command(stage: int, playbook: str, *extra: str,
                     inventory_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """`ansible-playbook playbooks/<playbook>` (site.yml: "site.yml") against the stage's lab, with mitogen as
    `make deploy` runs it."""
    cmd, env = site_command(stage, *extra, inventory_dir=inventory_dir)
    if playbook != "site.yml":
        cmd[1] = str(ROOT / "playbooks" / playbook)
    return cmd, dict(env, **lab.mitogen_env(env))


def played(stage: int, playbook: str, *extra: str, inventory_dir: Path | None = None) -> float:
    """Run a playbook against the lab (it must succeed: its output's end otherwise); its seconds."""
    cmd, env = playbook_command(stage, playbook, *extra, inventory_dir=inventory_dir)
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:2])} {' '.join(extra)} failed:\n{result.stdout[-3000:]}"
                         f"{result.stderr[-1000:]}")
    return time.monotonic() - start


def item_ids(container: str) -> set[int]:
    """The ids of the items table on a database server's container."""
    out = lab.sh(["docker", "exec", container, "mysql", "-N", "-B", "-e", "SELECT id FROM foobar.items"],
                 capture=True).stdout
    return {int(item) for item in out.split()}


def write_figures(writer: probe.Writer, start: float, on_primary: set[int]) -> dict[str, Any]:
    """What a write load saw from `start` on: acknowledged, failed, the longest time no write was taken, the first
    write taken after `start` and how many acknowledged writes the (new) primary lacks."""
    after = [at for at, _ in writer.acknowledged if at > start]
    return {"acknowledged": len(writer.acknowledged), "failed": len(writer.failed),
            "longest_write_gap_s": round(writer.longest_gap, 1),
            "first_write_after_s": round(min(after) - start, 1) if after else None,
            "acknowledged_missing": len(writer.ids() - on_primary)}


def writes_taken(writer: probe.Writer) -> None:
    """Wait (bounded) until the site has taken 20 of `writer`'s writes: the measurement starts from a working site."""
    if not probe.wait_for(lambda: len(writer.acknowledged) >= 20, timeout=30):
        raise SystemExit(f"bench: the site takes no writes before the primary's loss: {writer.failed[-5:]}")


def primary_loss(stage: int, tmp: Path) -> dict[str, Any]:
    """The database primary killed under a write load (a POST through the entry host every 0.1 s): promote.yml,
    the time from the kill to writes taken again, and whether every acknowledged write is on the new primary; the
    old primary rejoins as a replica (the inventory edited, mysql_replication_reseed=true); then a planned switch
    back under the same load (promote.yml with promote_fence=true: the answering primary is fenced) and the fenced
    one re-seeded and the app tier converged (promote.yml sent its reads to the primary), so the lab ends as it
    began."""
    entry, cafile, primary = entry_and_primary(stage)
    replica = next(h for h in lab.load_hosts(stage) if "db_replicas" in h.groups)
    swapped = probe.promoted_inventory(ROOT / "inventories" / f"stage{stage}", tmp / f"stage{stage}-promoted",
                                       "hosts.yml")
    pair = f"{primary.name},{replica.name}"
    out: dict[str, Any] = {"primary": primary.name, "replica": replica.name, "write_every_s": 0.1}
    with probe.Writer(entry, cafile) as writer:
        writes_taken(writer)
        lab.sh(["docker", "kill", primary.container], capture=True)
        killed = time.monotonic()
        promote_s = played(stage, "promote.yml")
        probe.wait_for(lambda: writer.acknowledged_after(killed + promote_s), timeout=30)
    out["kill_and_promote"] = {"promote_s": round(promote_s, 1), "acknowledged_before_kill": len(writer.ids(killed)),
                               **write_figures(writer, killed, item_ids(replica.container))}
    probe.start_booted(primary.container)
    lab.wait_for_ssh(lab.container_address(stage, primary.name))
    out["rejoin_s"] = round(played(stage, "site.yml", "--limit", pair, "-e", "mysql_replication_reseed=true",
                                   inventory_dir=swapped), 1)
    with probe.Writer(entry, cafile) as writer:
        writes_taken(writer)
        switched = time.monotonic()
        switch_s = played(stage, "promote.yml", "-e", "promote_fence=true", inventory_dir=swapped)
        probe.wait_for(lambda: writer.acknowledged_after(switched + switch_s), timeout=30)
    out["switch_back_fenced"] = {"promote_s": round(switch_s, 1),
                                 **write_figures(writer, switched, item_ids(primary.container))}
    out["fenced_rejoin_s"] = round(played(stage, "site.yml", "--limit", pair, "-e", "mysql_replication_reseed=true"),
                                   1)
    # promote.yml sent the app tier's reads to the new primary too; a converge of the tier sends them to the replica.
    out["app_reads_to_replica_s"] = round(played(stage, "site.yml", "--limit", "appservers"), 1)
    status = lab.sh(["docker", "exec", replica.container, "mysql", "-e", "SHOW SLAVE STATUS\\G"], capture=True).stdout
    out["replica_replicating_at_the_end"] = "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status
    return out


def timed_under_load(cmd: list[str], env: dict[str, str], entry: str, cafile: str | None, clients: int,
                     limit: int) -> tuple[float, dict[str, Any]]:
    """`cmd` timed while `clients` clients go through `entry` (a request every 0.05 s each, every 20th a POST, at
    most `limit` each): its seconds, and wall time, requests and those not answered 200/201 for the results."""
    with probe.load_clients(entry, clients, interval=0.05, limit=limit, write_every=20, cafile=cafile,
                            timeout=15) as loops:
        seconds = timed(cmd, env)
    outcomes = probe.outcomes_of(loops)
    return seconds, {"wall_s": round(seconds, 1), "requests": len(outcomes),
                     "failed": sum(1 for o in outcomes if o.status not in (200, 201))}


def deploy_under_load(stage: int, tmp: Path, clients: int = 4) -> dict[str, Any]:
    """A rolling deploy of a new release (the working copy's app/ plus a comment) to every app host, then
    rollback.yml back to the release they ran, each under `clients` clients through the entry host (a request every
    0.05 s each, every 20th a POST; bounded): wall time for the tier and per host, requests served and failed."""
    entry, cafile, _ = entry_and_primary(stage)
    app_hosts = [h for h in lab.load_hosts(stage) if "appservers" in h.groups]
    code = probe.code_base(tmp, f"\n# bench release {time.time()}\n")

    def measured(playbook: str, *extra: str) -> dict[str, Any]:
        seconds, result = timed_under_load(*playbook_command(stage, playbook, *extra), entry, cafile, clients, 6000)
        return {**result, "mean_per_host_s": round(seconds / len(app_hosts), 1)}

    return {"app_hosts": len(app_hosts), "clients": clients,
            "deploy": measured("deploy.yml", "-e", f"deploy_source_dir={code}"),
            "rollback": measured("rollback.yml")}


@contextmanager
def spare_host(stage: int, name: str, groups: tuple[str, ...], tmp: Path, release: str) -> Iterator[Path]:
    """A new lab container `name` (booted and reachable as the lab's hosts are, not in the stage's inventory) and an
    inventory file that adds it to `groups`; removed afterwards."""
    hosts = lab.load_hosts(stage)
    host = lab.LabHost(name=name, groups=groups, stage=stage)
    key = lab.ensure_key()
    image = f"{lab.PREFIX}-debian:{release}-v1"
    lab.sh(lab.run_args(host, image, key.with_suffix(".pub"), False, lab.host_address(stage, len(hosts))),
           capture=True)
    try:
        lab.sh(["docker", "exec", host.container, "sh", "-c", lab.ADMIN_SCRIPT, "admin-account", lab.ADMIN_USER],
               capture=True)
        address = lab.container_address(stage, name)
        lab.wait_for_ssh(address)
        known_hosts = tmp / "known_hosts"
        lab.record_host_keys({name: address}, known_hosts)
        document = lab.overlay_inventory({name: address}, key, known_hosts)
        document["all"]["children"] = {group: {"hosts": {name: None}} for group in groups}
        path = tmp / "scale-out.yml"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        yield path
    finally:
        lab.sh(["docker", "rm", "-f", host.container], check=False, capture=True)


def scraped_instances(stage: int, address: str, present: bool) -> list[str] | None:
    """Which instances at `address` the monitoring server's Prometheus scrapes (its API, from inside its
    container): read until some are (`present`) or none are, at most 15 s (a reload takes effect a moment after
    the run), then the last reading; None where the stage has no monitoring server or no reading succeeded (an
    unanswered API never stops the scale-in that follows)."""
    monitor = next((h for h in lab.load_hosts(stage) if "monitoring" in h.groups), None)
    if monitor is None:
        return None
    readings: list[list[str]] = []

    def settled() -> bool:
        targets = probe.get_json_from(monitor.container, "127.0.0.1", "/api/v1/targets?state=active", 9090)
        instances = {t["labels"]["instance"] for t in targets["data"]["activeTargets"]}
        readings.append(sorted(i for i in instances if i.rsplit(":", 1)[0] == address))
        return bool(readings[-1]) == present

    probe.wait_for(settled, timeout=15, interval=1)
    return readings[-1] if readings else None


def scale_out_and_in(stage: int, tmp: Path, release: str, clients: int = 4) -> dict[str, Any]:
    """A spare app server (stage 3; web and app server below) joins its tier by inventory, then leaves: each
    site.yml run timed under `clients` clients through the entry host (as deploy_under_load), the share of 40
    GETs the new host served in between, and after each run the new host's targets Prometheus scrapes."""
    entry, cafile, _ = entry_and_primary(stage)
    groups = ("appservers",) if stage >= 3 else ("webservers", "appservers")
    name = "app-03" if stage >= 3 else "web-03"

    def converged(*extra: str) -> dict[str, Any]:
        cmd, env = site_command(stage, *extra)
        return timed_under_load(cmd, dict(env, **lab.mitogen_env(env)), entry, cafile, clients, 8000)[1]

    with spare_host(stage, name, groups, tmp, release) as inventory:
        out = converged("-i", str(inventory))
        served = [probe.request(entry, "GET", "/", cafile=cafile).headers.get("x-served-by", "") for _ in range(40)]
        out["new_host_share"] = round(sum(1 for s in served if s == name) / len(served), 3)
        address = lab.container_address(stage, name)
        out["new_host_scraped"] = scraped_instances(stage, address, present=True)
        back = converged()
        back["new_host_scraped"] = scraped_instances(stage, address, present=False)
    return {"host": name, "groups": list(groups), "clients": clients, "scale_out": out, "scale_in": back}


def stage_roles(stage: int) -> dict[str, list[str]]:
    """Which roles each group gets at a stage (the wiring's webstack_roles_by_group, for the package floor)."""
    roles = {"loadbalancers": ["haproxy"], "webservers": ["nginx"], "appservers": ["app"],
             "db_primary": ["mysql"], "db_replicas": ["mysql"]}
    if stage >= 2:
        roles |= {"all": ["sshd", "ufw", "monitoring_agent"], "monitoring": ["monitoring_server"],
                  "loadbalancers": ["haproxy", "certbot"], "cache": ["redis"]}
    if stage >= 3:
        roles["loadbalancers"] = [*roles["loadbalancers"], "keepalived"]
    return roles


def package_floor(stage: int, release: str) -> dict[str, Any]:
    """Raw apt-get time of each host's package set on fresh containers, all hosts in parallel."""
    hosts = lab.load_hosts(stage)
    roles_by_group = stage_roles(stage)
    image = subprocess.run([str(ROOT / "tools" / "build-image.sh"), release], capture_output=True, text=True,
                           check=True).stdout.split()[-1]
    names = [f"webstack-bench-floor-{h.name}" for h in hosts]
    subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)
    try:
        for name in names:
            subprocess.run(["docker", "run", "-d", "--name", name, *lab.SYSTEMD_FLAGS, image, lab.SYSTEMD["command"]],
                           check=True, capture_output=True)
        time.sleep(2)

        def install(pair: tuple[str, lab.LabHost]) -> float:
            name, host = pair
            packages = webstack.role_packages(webstack.group_roles([*host.groups, "all"], roles_by_group),
                                              str(ROOT / "roles"), {})
            script = ("export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                      "apt-get install -y -qq --no-install-recommends " + " ".join(packages) + " >/dev/null")
            return timed(["docker", "exec", name, "sh", "-c", script])

        start = time.monotonic()
        with ThreadPoolExecutor(len(names)) as pool:
            per_host = list(pool.map(install, zip(names, hosts, strict=True)))
        return {"wall_s": round(time.monotonic() - start, 1), "per_host_s": [round(t, 1) for t in per_host]}
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)


# The peer's figures from the side-by-side run in the speed issue: its package floor and its re-run (stage 1).
PEER_FLOOR_S = 13.3
PEER_RERUN_S = 15.5


def targets(floor_s: float) -> dict[str, float]:
    """Converge targets scaled to this run's package floor: fresh <= 1.5x floor, re-run <= half the peer's."""
    return {"fresh_max_s": round(1.5 * floor_s, 1),
            "rerun_max_s": round(0.5 * PEER_RERUN_S * floor_s / PEER_FLOOR_S, 1)}


def site_command(stage: int, *extra: str, inventory_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """`ansible-playbook site.yml` against the stage's lab (its inventory, or `inventory_dir` in its place), and its
    environment (the lab's secrets)."""
    inventory = ["-i", str(inventory_dir or ROOT / "inventories" / f"stage{stage}"), "-i",
                 str(ROOT / "build" / "lab" / f"stage{stage}" / "lab.yml")]
    env = dict(os.environ, **lab.stage_env(stage))
    return ["ansible-playbook", str(ROOT / "site.yml"), *inventory, *extra], env


def converge_lab(stage: int, settings: dict[str, Any], *extra: str) -> None:
    """Converge the running lab with `settings` as extra vars (mitogen, as `make lab` does)."""
    cmd, env = site_command(stage, "-e", json.dumps(settings), *extra)
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(env, **lab.mitogen_env(env)), stdout=subprocess.DEVNULL)


def converge(stage: int, release: str) -> dict[str, Any]:
    floor = package_floor(stage, release)
    subprocess.run([sys.executable, str(ROOT / "tools" / "lab.py"), "down", str(stage)], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "lab.py"), "create", str(stage)], check=True,
                   capture_output=True)
    cmd, env = site_command(stage)
    fast = dict(env, **lab.mitogen_env(env))
    plain = lab.linear_env(env)
    fresh = timed(cmd, fast)
    rerun = timed(cmd, fast)
    rerun_plain = timed(cmd, plain)
    goal = targets(floor["wall_s"])
    return {"package_floor": floor, "strategy": fast["ANSIBLE_STRATEGY"], "fresh_converge_s": round(fresh, 1),
            "rerun_s": round(rerun, 1), "rerun_plain_ssh_linear_s": round(rerun_plain, 1),
            "converge_vs_floor": round(fresh / floor["wall_s"], 2), "targets": goal,
            "fresh_target_met": fresh <= goal["fresh_max_s"], "rerun_target_met": rerun <= goal["rerun_max_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench.json")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--release", default="bookworm", choices=["bookworm", "trixie"])
    parser.add_argument("--only", choices=["serving", "converge", "failover", "deploy", "scale", "promote"])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"stage": args.stage, "cpus": os.cpu_count(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.only in (None, "converge"):
        results["converge"] = converge(args.stage, args.release)
    else:
        subprocess.run([sys.executable, str(ROOT / "tools" / "lab.py"), "up", str(args.stage)], check=True,
                       stdout=subprocess.DEVNULL)
    if args.only in (None, "serving"):
        results["serving"] = serving(args.stage, args.duration, args.connections)
        results["semi_sync_write_cost"] = semi_sync_cost(args.stage)
        results["cache"] = cache_effect(args.stage)
    if args.only in (None, "deploy"):
        with tempfile.TemporaryDirectory() as tmp:
            results["deploy"] = deploy_under_load(args.stage, Path(tmp))
    if args.only in (None, "scale"):
        with tempfile.TemporaryDirectory() as tmp:
            results["scale"] = scale_out_and_in(args.stage, Path(tmp), args.release)
    if args.only == "promote" or (args.only is None and args.stage >= 3):  # the primary on a host of its own
        with tempfile.TemporaryDirectory() as tmp:
            results["primary_loss"] = primary_loss(args.stage, Path(tmp))
    if args.only in (None, "failover"):
        results["primary_blackholed"] = primary_blackholed(args.stage)
        if args.stage >= 3:
            results["vip_failover"] = vip_failover(args.stage)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    everything = {key: value for key, value in everything.items() if re.fullmatch(r"stage\d+", key)}
    key = f"stage{args.stage}"
    if args.only:  # one part re-measured: keep the others of the last full run of that stage
        results = {**everything.get(key, {}), **results}
    everything[key] = results
    args.out.write_text(json.dumps(everything, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
