"""Stage 2's Redis cache (web-02), seen through the load balancer: reads are served from it, a write shows at
once, and losing it -- crashed or hung -- costs no request; only the app servers reach it, with its password."""

from __future__ import annotations

import os
from typing import Any

import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
CACHE = RUNNER.get_hosts("cache")[0]
LB = RUNNER.get_hosts("loadbalancers")[0]
APPS = RUNNER.get_hosts("appservers")
OTHER_APP = next(app for app in APPS if app != CACHE)

testinfra_hosts = [CACHE]


def get(lb: str, cafile: str) -> probe.Reply:
    return probe.request(lb, "GET", "/api/items", cafile=cafile)


def test_reads_come_from_the_cache_and_a_write_shows_at_once(lb: str, pebble_root: str) -> None:
    get(lb, pebble_root)
    assert probe.wait_for(lambda: get(lb, pebble_root).headers.get("x-cache") == "HIT", timeout=30)
    text = probe.unique_text("cached")
    assert probe.request(lb, "POST", "/api/items", {"text": text}, cafile=pebble_root).status == 201
    # Every app server, at once: the write stored the primary's list in the shared cache.
    replies = [get(lb, pebble_root) for _ in range(6)]
    assert all(text.encode() in reply.body for reply in replies), [r.headers.get("x-cache") for r in replies]
    assert {reply.headers.get("x-served-by") for reply in replies} == set(APPS)
    assert {reply.headers.get("x-cache") for reply in replies} == {"HIT"}


def test_only_app_servers_reach_the_cache_and_only_with_its_password() -> None:
    address = probe.container_address(CACHE)
    assert probe.scan(LB, [(address, 6379)])[f"{address}:6379"] == "filtered"
    assert probe.scan(OTHER_APP, [(address, 6379)])[f"{address}:6379"] == "open"
    ping = probe.node(OTHER_APP).run(
        f"python3 -c 'import redis; redis.Redis(host=\"{address}\", socket_timeout=3).ping()'")
    assert ping.rc != 0 and "Authentication required" in ping.stderr, ping.stderr


def test_a_crashed_then_hung_cache_costs_no_request(lb: str, pebble_root: str, host: Any) -> None:
    """Bounded load with writes; Redis is killed (systemd restarts it, empty), then frozen for 6 s (every call to
    it times out). The app reads the database meanwhile: no request fails, and afterwards the cache serves again."""
    with probe.LoadLoop(lb, interval=0.05, limit=500, write_every=5, cafile=pebble_root, timeout=10) as load:
        probe.crash_then_hang(CACHE, "redis-server")
    outcomes = load.finished()
    # One request at a time, 0.05 s apart at most: 185 in a loaded CI run, 326 in make bench; 100 spans the losses.
    assert len(outcomes) >= 100 and load.failed == [], load.summary()
    assert host.service("redis-server").is_running
    text = probe.unique_text("after")
    assert probe.request(lb, "POST", "/api/items", {"text": text}, cafile=pebble_root).status == 201
    assert probe.wait_for(lambda: (reply := get(lb, pebble_root)).headers.get("x-cache") == "HIT"
                          and text.encode() in reply.body, timeout=30), "the cache never served again"
