"""keepalived pair: one VIP in front of two HAProxy hosts.

From the controller, under a bounded request loop (100 GETs per case, 0.1 s apart, 1 s timeout each): the VIP
moves off lb-01 when its HAProxy is stopped, killed for good or the whole host freezes (docker pause), and
comes back to lb-01 once it recovers (preemption, keepalived_nopreempt false). Every failure made here is
undone in a finally block; each case starts and ends with lb-01 the only holder. The measured numbers are
printed (molecule's verifier runs pytest with -s). Then the role again: check mode, a reload under load (at
most 400 GETs), bad input.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import webstack_probe as probe

LB1, LB2 = "webstack-mka-lb-01", "webstack-mka-lb-02"
LBS = (LB1, LB2)
ADDRESSES = {LB1: "10.251.50.11", LB2: "10.251.50.12"}
VIP = "10.251.50.100"
STATE_FILE = "/run/keepalived/state"
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"
# Bounds, not expectations: a frozen holder is replaced after advert_int x 3 + skew (~3.4 s), a dead HAProxy
# after fall x interval (~2 s); taking the VIP back adds rise x interval to the advert timeout (~5.5 s).
# The loops measure what clients really saw.
FAILOVER_BOUND = 6.0
MOVE_TIMEOUT = 12.0


def request_loop() -> probe.LoadLoop:
    """The request loop of every failover measurement here: GET / every 0.1 s, 1 s timeout, at most 100."""
    return probe.LoadLoop(VIP, path="/", interval=0.1, timeout=1.0, limit=100)


# A drop-in that keeps a killed HAProxy dead (the packaged unit restarts it: Restart=always).
NO_RESTART = "/run/systemd/system/haproxy.service.d/zz-test-no-restart.conf"

# The docker backend: each check is one docker exec (the ansible backend costs seconds per command).
testinfra_hosts = [f"docker://{name}" for name in LBS]


def sh(container: str, command: str, *, check: bool = True, timeout: float = 20) -> str:
    """Run a shell command in a container with docker exec (fast enough to poll every 0.1 s)."""
    result = subprocess.run(["docker", "exec", container, "sh", "-c", command],
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, f"{container}: {command}: {result.stdout}{result.stderr}"
    return result.stdout


def holders() -> list[str]:
    """The containers with the VIP on an interface (a paused container cannot be asked: not counted)."""
    return [c for c in LBS if f"inet {VIP}/" in sh(c, "ip -4 -o addr show", check=False, timeout=5)]


def state(container: str) -> str:
    """The VRRP state the notify script wrote last (first word of the state file)."""
    return sh(container, f"cat {STATE_FILE}").split()[0]


def wait_holder(expected: str, timeout: float = MOVE_TIMEOUT) -> float | None:
    """Seconds until `expected` is the only holder of the VIP (polled every 0.1 s), None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if holders() == [expected]:
            return round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return None


def served_by() -> str:
    return probe.request(VIP, "GET", "/", timeout=2).headers["x-served-by"]


def finish(loop: probe.LoadLoop, timeout: float = 40) -> None:
    """Let a request loop run to its limit (bounded), so it covers the time after the event too."""
    deadline = time.monotonic() + timeout
    while len(loop.outcomes) < loop.limit and time.monotonic() < deadline:
        time.sleep(0.1)


def report(case: str, loop: probe.LoadLoop, moved: float | None) -> dict[str, Any]:
    numbers = {"case": case, "requests": len(loop.outcomes), "failed": len(loop.failed),
               "longest_gap_s": round(loop.max_gap, 2), "vip_moved_after_s": moved}
    print(f"\nMEASURED {json.dumps(numbers)}\n  {loop.summary()}", flush=True)
    return numbers


def settled_on_lb1() -> None:
    """The state every case starts from and returns to: lb-01 the only holder, MASTER; lb-02 BACKUP."""
    assert wait_holder(LB1, timeout=20) is not None, f"VIP held by {holders()}"
    assert probe.wait_for(lambda: state(LB1) == "MASTER" and state(LB2) == "BACKUP", timeout=10, interval=0.2), (
        state(LB1), state(LB2))
    assert probe.wait_for(lambda: served_by() == LB1, timeout=10, interval=0.2)


def failover_and_back(case: str, break_lb1: Callable[[], object], repair_lb1: Callable[[], object],
                      lb1_state_while_broken: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Break lb-01 under a request loop and measure the move to lb-02; repair it under another loop and
    measure the move back. The repair always runs."""
    settled_on_lb1()
    repaired = False
    try:
        with request_loop() as loop:
            time.sleep(1.0)
            break_lb1()
            moved = wait_holder(LB2)
            finish(loop)
        out = report(f"{case}: failover to lb-02", loop, moved)
        assert moved is not None, f"{case}: the VIP did not leave lb-01 within {MOVE_TIMEOUT} s: {holders()}"
        assert moved < FAILOVER_BOUND and loop.max_gap < FAILOVER_BOUND, loop.summary()
        # The notify script runs right after the transition: give it a moment to write the file.
        assert probe.wait_for(lambda: state(LB2) == "MASTER", timeout=5, interval=0.1), state(LB2)
        if lb1_state_while_broken:
            assert probe.wait_for(lambda: state(LB1) == lb1_state_while_broken, timeout=5, interval=0.1), state(LB1)
        assert served_by() == LB2
        with request_loop() as back_loop:
            time.sleep(1.0)
            repaired = True
            repair_lb1()
            back = wait_holder(LB1)
            finish(back_loop)
        back_out = report(f"{case}: back to lb-01", back_loop, back)
        assert back is not None, f"{case}: lb-01 did not take the VIP back (preemption): {holders()}"
        assert back_loop.max_gap < MOVE_TIMEOUT
    finally:
        if not repaired:
            repair_lb1()
    settled_on_lb1()
    return out, back_out


def run_converge(*extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, int]]]:
    """converge.yml against the scenario's inventory (Molecule's own, with the linked connection settings)."""
    return probe.run_playbook(CONVERGE, probe.scenario_inventory(), *extra)


# --- the role's result on each host -------------------------------------------------------------------


def test_files_service_and_configuration(host: Any) -> None:
    name = host.backend.get_hostname()
    conf = host.file("/etc/keepalived/keepalived.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o640)
    auth = host.file("/etc/keepalived/auth.conf")
    assert (auth.user, auth.mode) == ("root", 0o600)
    assert "auth_type PASS" in host.check_output("cat /etc/keepalived/auth.conf")
    notify = host.file("/usr/local/sbin/keepalived-notify")
    assert (notify.user, notify.mode) == ("root", 0o755)
    assert host.run("keepalived --config-test --use-file /etc/keepalived/keepalived.conf").rc == 0
    service = host.service("keepalived")
    assert service.is_enabled and service.is_running
    text = conf.content_string
    other = LB2 if name == LB1 else LB1
    # Derived from the group, nothing typed per host: the other member is the only peer, priority 150 - index.
    assert re.search(r"unicast_peer \{\s+" + re.escape(ADDRESSES[other]) + r"\s+\}", text), text
    assert f"unicast_src_ip {ADDRESSES[name]}" in text
    assert f"priority {150 - LBS.index(name)}" in text
    assert "auth_pass" not in text  # the password only in auth.conf (0600), never in a --diff of this file


def test_vrrp_is_unicast(host: Any) -> None:
    """No member joined VRRP's multicast group 224.0.0.18: adverts go to the peer's address only."""
    assert "224.0.0.18" not in host.check_output("ip maddr show")


# --- the pair, seen from the controller -----------------------------------------------------------------


def test_exactly_one_holder_lb01_answers_on_the_vip() -> None:
    settled_on_lb1()
    assert holders() == [LB1]
    reply = probe.request(VIP, "GET", "/")
    assert reply.status == 200 and reply.body == b"ok"
    assert reply.headers["x-served-by"] == LB1


def test_haproxy_stopped_moves_the_vip_and_lb01_takes_it_back() -> None:
    failover_and_back("haproxy stopped",
                      lambda: sh(LB1, "systemctl stop haproxy"),
                      lambda: sh(LB1, "systemctl start haproxy"),
                      lb1_state_while_broken="FAULT")


def test_haproxy_killed_for_good_moves_the_vip() -> None:
    """kill -9 of HAProxy's master with systemd's restart blocked: a HAProxy that dies and stays dead."""

    def kill() -> None:
        sh(LB1, f"mkdir -p {Path(NO_RESTART).parent} && printf '[Service]\\nRestart=no\\n' > {NO_RESTART} && "
                "systemctl daemon-reload && kill -9 $(systemctl show -p MainPID --value haproxy)")

    def repair() -> None:
        sh(LB1, f"rm -f {NO_RESTART} && systemctl daemon-reload && systemctl reset-failed haproxy; "
                "systemctl start haproxy")

    failover_and_back("haproxy kill -9, not restarted", kill, repair, lb1_state_while_broken="FAULT")


def test_haproxy_killed_and_restarted_by_systemd_keeps_the_vip() -> None:
    """kill -9 with the packaged unit (Restart=always): HAProxy is back before the track script's fall
    (2 x 1 s) runs out, so the VIP stays on lb-01 and clients see one short blip at most."""
    settled_on_lb1()
    before = sh(LB1, "systemctl show -p MainPID --value haproxy").strip()
    with request_loop() as loop:
        time.sleep(1.0)
        sh(LB1, f"kill -9 {before}")
        restarted = probe.wait_for(
            lambda: sh(LB1, "systemctl is-active haproxy", check=False).strip() == "active"
            and sh(LB1, "systemctl show -p MainPID --value haproxy").strip() not in ("0", before),
            timeout=10, interval=0.1)
        finish(loop)
    report("haproxy kill -9, restarted by systemd", loop, None)
    assert restarted
    assert holders() == [LB1] and state(LB1) == "MASTER"
    assert loop.max_gap < 3.0


def test_frozen_holder_docker_pause_moves_the_vip_and_back() -> None:
    def pause() -> None:
        subprocess.run(["docker", "pause", LB1], check=True, capture_output=True, timeout=30)

    def unpause() -> None:
        subprocess.run(["docker", "unpause", LB1], check=False, capture_output=True, timeout=30)

    failover_and_back("lb-01 frozen (docker pause)", pause, unpause, lb1_state_while_broken=None)


def test_keepalived_stopped_hands_over_at_once() -> None:
    """A stopped keepalived sends priority 0 (no waiting for the master-down timer) and notifies STOP."""
    failover_and_back("keepalived stopped on lb-01",
                      lambda: sh(LB1, "systemctl stop keepalived"),
                      lambda: sh(LB1, "systemctl start keepalived"),
                      lb1_state_while_broken="STOP")


def test_notify_logged_every_transition() -> None:
    """The journal holds each transition (tag keepalived-notify), the state file the current state."""
    lb1 = sh(LB1, "journalctl -t keepalived-notify -o cat --no-pager")
    lb2 = sh(LB2, "journalctl -t keepalived-notify -o cat --no-pager")
    print(f"\nlb-01 transitions:\n{lb1}lb-02 transitions:\n{lb2}", flush=True)
    for expected in ("-> BACKUP", "-> MASTER", "-> FAULT", "-> STOP", "FAULT -> BACKUP", "BACKUP -> MASTER"):
        assert expected in lb1, expected
    assert "BACKUP -> MASTER" in lb2 and "MASTER -> BACKUP" in lb2
    fields = sh(LB1, f"cat {STATE_FILE}").split()
    assert fields[:3] == ["MASTER", "VI_webstack", "150"] and fields[3].endswith("Z"), fields


# --- the role run again: check mode, a reload, bad input ----------------------------------------------


def test_check_mode_reports_no_change() -> None:
    result, recap = run_converge("--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(counts["changed"] == 0 for counts in recap.values()), recap


def test_a_changed_setting_reloads_and_the_holder_keeps_the_vip() -> None:
    """keepalived.conf changes -> handler reloads (SIGHUP: same MainPID, no election): 0 failed requests."""
    settled_on_lb1()
    pids = {c: sh(c, "systemctl show -p MainPID --value keepalived").strip() for c in LBS}
    try:
        with probe.LoadLoop(VIP, path="/", interval=0.1, timeout=1.0, limit=400) as loop:
            result, recap = run_converge("-e", json.dumps({"keepalived_track_rise": 3}))
        report("converge with a changed setting (reload)", loop, None)
        assert result.returncode == 0, result.stdout[-3000:]
        assert all(counts["changed"] >= 1 for counts in recap.values()), recap
        assert "RUNNING HANDLER [keepalived : Reload keepalived]" in result.stdout
        assert all("rise 3" in sh(c, "cat /etc/keepalived/keepalived.conf") for c in LBS)
        assert {c: sh(c, "systemctl show -p MainPID --value keepalived").strip() for c in LBS} == pids
        assert len(loop.failed) == 0, loop.summary()
        assert holders() == [LB1]
    finally:
        result, recap = run_converge()
    assert result.returncode == 0 and all(counts["failed"] == 0 for counts in recap.values()), recap
    settled_on_lb1()


@pytest.mark.parametrize(("extra", "words"), [
    ({"keepalived_vip": "192.0.2.100"}, ["192.0.2.100", "interface eth0", "10.251.50.0/24"]),
    ({"keepalived_auth_pass": "nine-char", "keepalived_virtual_router_id": 256},
     ["keepalived_auth_pass must be 1-8 characters", "keepalived_virtual_router_id must be a whole number 1..255"]),
])
def test_bad_input_fails_before_any_change(extra: dict[str, Any], words: list[str]) -> None:
    result, recap = run_converge("-e", json.dumps(extra))
    # Molecule's ansible.cfg sets display_failed_stderr: the failure is on stderr there.
    out = result.stdout + result.stderr
    assert result.returncode != 0
    for word in words:
        assert word in out, out[-3000:]
    assert "nine-char" not in out  # the password is never printed
    assert all(counts["changed"] == 0 and counts["failed"] == 1 for counts in recap.values()), recap
    assert holders() == [LB1]
