#!/usr/bin/env python3
"""make chaos STAGE=n: the design report's single-point-of-failure claims, checked on a running lab.

    python tools/chaos.py STAGE                     # every host, killed then cut off (make lab STAGE=n first)
    python tools/chaos.py STAGE --hosts web-01 --modes cut-off --hold 8

For each host in turn and each mode: a bounded request loop through the site's entry point (reads, and every
fifth request a write), the host's container killed (`docker kill`; then started again) or cut off the network
(every packet dropped, the interface stays up), the failed requests and the longest time nobody was answered
measured, the host brought back and the stack waited for (every server UP on every load balancer, replication
running, the VIP on its first holder, every app server answering reads through the site, a write answered). The
load keeps running until the stack is healthy again, so a host coming
back is measured too.

Each case is compared with what tools/design.py says losing that host does (from the same inventory):
- site down: requests sent while the host is lost must fail (if none does, the report is wrong);
- writes down: no read fails, and writes do;
- failover gap: answers stop for no longer than the stated gap (when the host is lost, and when it takes the VIP
  back), and no request started after the gap fails while the host is away;
- nothing / monitoring down: no read fails and no write started after the loss fails.
A request under way when the loss began is counted apart: a write is never replayed (it may fail: the
client cannot know whether it was applied), and a connection held by a load balancer dies with it.

Results: build/chaos/<name>.json and .md, the table printed; exit 1 when any verdict is wrong.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import design
import webstack_probe as probe

ROOT = Path(__file__).resolve().parent.parent
MODES = ("killed", "cut-off")
HOLD_S = 6.0  # past the load balancers' health-check window (2 s x fall 2) and a VRRP takeover
INTERVAL_S = 0.05  # a request started every 0.05 s, each on its own (overlapping)
TIMEOUT_S = 25.0  # longer than HAProxy's timeout server + its retry of a GET: a slow answer is not a failure
WRITE_EVERY = 5
HEALTHY_TIMEOUT_S = 120.0

SHOW_STAT = ("import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect({sock!r}); "
             "s.sendall(b'show stat\\n'); print(b''.join(iter(lambda: s.recv(65536), b'')).decode())")


@dataclass(frozen=True)
class Target:
    """A running stage: its design model, the container of each host, and where clients send requests."""

    model: Mapping[str, Any]
    containers: Mapping[str, str]
    entry: str
    cafile: str | None = None
    runtime_socket: str = "/run/haproxy/admin.sock"

    def of(self, group: str) -> list[str]:
        return [self.containers[h] for h in design.hosts_of(self.model, group)]


@dataclass(frozen=True)
class Observed:
    """What the clients saw during one case."""

    requests: int
    reads_failed: int
    writes: int
    writes_failed: int
    failed_in_flight: int  # failed requests that were under way when the loss began
    failed_late: int  # failed requests started after the loss + the stated gap, before the host's return
    max_gap_s: float
    failed_while_lost: int = 0  # failed requests started between the loss and the host's return
    back_after_s: float = 0.0  # from the host's return until the stack was healthy
    # Writes started after the loss that failed: their answers (0: no answer) and the longest wait for one.
    failed_write_statuses: tuple[int, ...] = ()
    slowest_failed_write_s: float = 0.0
    # What the failed requests got ("503 x40", "TimeoutError x2") and when they started, from the loss on (s).
    failures: tuple[str, ...] = ()
    failed_between_s: tuple[float, float] = (0.0, 0.0)

    def text(self) -> str:
        reads = self.requests - self.writes
        return (f"reads {self.reads_failed}/{reads} failed, writes {self.writes_failed}/{self.writes} failed"
                + (f" ({self.failed_in_flight} of them under way when the loss began)" if self.failed_in_flight
                   else "")
                + f", longest gap {self.max_gap_s:.2f} s"
                + (f"; failures: {', '.join(self.failures)}, started {self.failed_between_s[0]:+.1f} to "
                   f"{self.failed_between_s[1]:+.1f} s from the loss" if self.failures else ""))


def observe(outcomes: Sequence[probe.Outcome], lost_at: float, gap_s: float, back_after_s: float = 0.0,
            began: float | None = None, returned_at: float | None = None) -> Observed:
    """Sum up a load loop's outcomes around the loss: it `began` (the kill or cut was started), took effect at
    `lost_at`, and the host `returned_at` (started again, reconnected)."""
    began = lost_at if began is None else began
    returned_at = float("inf") if returned_at is None else returned_at
    failed = [o for o in outcomes if not o.ok]
    in_flight = [o for o in failed if o.started < lost_at and o.started + o.seconds >= began]
    late_writes = [o for o in failed if o.write and o.started >= lost_at]
    kinds = collections.Counter(str(o.status) if o.status else o.error.split("(")[0] or "no answer" for o in failed)
    starts = [round(o.started - lost_at, 1) for o in failed]
    ok_ends = sorted(o.started + o.seconds for o in outcomes if o.ok)
    gaps = [b - a for a, b in itertools.pairwise(ok_ends)]
    return Observed(
        requests=len(outcomes),
        reads_failed=sum(1 for o in failed if not o.write),
        writes=sum(1 for o in outcomes if o.write),
        writes_failed=sum(1 for o in failed if o.write),
        failed_in_flight=len(in_flight),
        failed_late=sum(1 for o in failed if lost_at + gap_s < o.started <= returned_at),
        failed_while_lost=sum(1 for o in failed if began <= o.started <= returned_at),
        max_gap_s=round(max(gaps, default=0.0), 2),
        back_after_s=round(back_after_s, 1),
        failed_write_statuses=tuple(sorted({o.status or 0 for o in late_writes})),
        slowest_failed_write_s=round(max((o.seconds for o in late_writes), default=0.0), 2),
        failures=tuple(f"{kind} x{count}" for kind, count in kinds.most_common()),
        failed_between_s=(min(starts, default=0.0), max(starts, default=0.0)))


def verdict(loss: design.Loss, seen: Observed) -> tuple[bool, str]:
    """Does what the clients saw match what the report says losing the host does? (ok, why)"""
    if loss.effect == design.SITE_DOWN:
        if seen.failed_while_lost == 0:
            return False, "the report calls this host a single point of failure, yet no request sent meanwhile failed"
        return True, "requests failed, as reported"
    if loss.effect == design.WRITES_DOWN:
        if seen.reads_failed:
            return False, f"{seen.reads_failed} read(s) failed: reads should survive the loss"
        if seen.writes_failed == 0:
            return False, "no write failed: the report says writes go down with this host"
        return True, "reads went on, writes failed, as reported"
    if loss.effect == design.FAILOVER:
        gap = loss.gap_s or 0.0
        if seen.max_gap_s > gap:
            return False, f"nobody was answered for {seen.max_gap_s:.2f} s, more than the stated {gap} s"
        if seen.failed_late:
            return False, f"{seen.failed_late} request(s) started after the failover gap failed"
        # Back, the first holder takes the VIP back (a second failover: requests under way on the other one may
        # fail), within the same gap.
        return True, f"answered again within {gap} s"
    # nothing, monitoring down: the site does not notice
    if seen.reads_failed:  # a GET in flight is retried by the load balancer: none may fail
        return False, f"{seen.reads_failed} read(s) failed: the report says losing this host costs none"
    if seen.writes_failed > seen.failed_in_flight:
        return False, (f"{seen.writes_failed - seen.failed_in_flight} write(s) started after the loss failed: "
                       "the report says losing this host costs none")
    if seen.failed_in_flight:
        return True, (f"no request started after the loss failed ({seen.failed_in_flight} write(s) in flight at "
                      "the loss failed: never replayed)")
    return True, "no request failed"


# --- The running stack ---------------------------------------------------------------------------------------


def docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout)


def address_of(container: str) -> str:
    shown = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container)
    return shown.stdout.split()[0] if shown.returncode == 0 and shown.stdout.split() else ""


def servers_not_up(container: str, runtime_socket: str) -> list[str]:
    """The servers a load balancer does not see UP (health-checked ones; `no check` servers count as up)."""
    shown = docker("exec", container, "python3", "-c", SHOW_STAT.format(sock=runtime_socket))
    if shown.returncode != 0:
        return [f"{container}: HAProxy does not answer ({shown.stderr.strip()[-200:]})"]
    lines = shown.stdout.splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return [f"{container}: {r['pxname']}/{r['svname']} {r.get('status')}" for r in rows
            if r.get("svname") not in ("FRONTEND", "BACKEND")
            and not (r.get("status", "").startswith("UP") or r.get("status") == "no check")]


def replication_problems(container: str) -> list[str]:
    shown = docker("exec", container, "mysql", "-e", "SHOW SLAVE STATUS\\G")
    if shown.returncode != 0:
        return [f"{container}: MariaDB does not answer"]
    running = [f"{thread}: Yes" in shown.stdout for thread in ("Slave_IO_Running", "Slave_SQL_Running")]
    return [] if all(running) else [f"{container}: replication not running"]


def problems(target: Target) -> list[str]:
    """What keeps the stack from being whole: [] when every part is back."""
    try:
        return _problems(target)
    except (OSError, subprocess.TimeoutExpired, http.client.HTTPException) as exc:
        return [f"checking the stack failed: {exc!r}"]


def _problems(target: Target) -> list[str]:
    found: list[str] = []
    for lb in target.of("loadbalancers"):
        found += servers_not_up(lb, target.runtime_socket)
    for replica in target.of("db_replicas"):
        found += replication_problems(replica)
    lbs = target.of("loadbalancers")
    if target.model.get("vip") and lbs and probe.vip_holders(lbs, target.model["vip"]) != lbs[:1]:
        found.append(f"the VIP is not on {lbs[0]} alone")
    # Every app server answers through the site again (the web servers' passive checks let it back in only
    # fail_timeout after its last failure: until then, losing another one would leave them none).
    apps = set(design.hosts_of(target.model, "appservers"))
    statuses, served = [], set()
    try:
        for _ in range(4 * len(apps)):
            reply = probe.request(target.entry, "GET", "/api/items", timeout=5, cafile=target.cafile)
            statuses.append(str(reply.status))
            served.add(reply.headers.get("x-served-by", ""))
            if apps <= served:
                break
    except (OSError, http.client.HTTPException) as exc:
        statuses.append(repr(exc))
    if any(s != "200" for s in statuses):
        found.append(f"the site answers {statuses}")
    elif not apps <= served:
        found.append(f"no answer from {', '.join(sorted(apps - served))} through the site yet")
    elif not found:  # the rest is whole: so must be the write path
        try:
            status = probe.request(target.entry, "POST", "/api/items", {"text": probe.unique_text("chaos")},
                                   timeout=5, cafile=target.cafile).status
        except (OSError, http.client.HTTPException) as exc:
            status = 0
            found.append(f"a write failed: {exc!r}")
        if status and status != 201:
            found.append(f"a write answers {status}")
    return found


def wait_healthy(target: Target, timeout: float = HEALTHY_TIMEOUT_S) -> float:
    """Wait (bounded) until the stack is whole; the seconds it took. Raises naming what is still missing."""
    start = time.monotonic()
    last: list[str] = []
    while time.monotonic() - start < timeout:
        last = problems(target)
        if not last:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"chaos: the stack did not recover within {timeout:.0f} s: {last}")


def failure(mode: str, container: str) -> AbstractContextManager[None]:
    modes: dict[str, Callable[[str], AbstractContextManager[None]]] = {"killed": probe.killed,
                                                                        "cut-off": probe.cut_off}
    return modes[mode](container)


def run_case(target: Target, host: str, mode: str, hold: float) -> dict[str, Any]:
    """Lose `host` in `mode` for `hold` seconds under load, bring it back, wait for the stack; the case's record."""
    loss = design.host_loss(target.model, host)
    container = target.containers[host]
    address = address_of(container)
    gap = loss.gap_s or 0.0
    with probe.LoadLoop(target.entry, interval=INTERVAL_S, timeout=TIMEOUT_S, limit=int(600 / INTERVAL_S),
                        write_every=WRITE_EVERY, cafile=target.cafile, overlap=True) as load:
        time.sleep(1)
        began = time.monotonic()
        with failure(mode, container):
            lost_at = time.monotonic()  # the kill or the cut has taken effect
            time.sleep(hold)
        returned_at = time.monotonic()
        if address_of(container) != address:
            raise SystemExit(f"chaos: {container} came back at {address_of(container)}, not {address}")
        back_after = wait_healthy(target)
        time.sleep(1)
    seen = observe(load.finished(), lost_at, gap, back_after, began, returned_at)
    ok, why = verdict(loss, seen)
    return {"host": host, "mode": mode, "effect": loss.effect, "expected": design.expected(loss),
            "observed": seen.text(), "ok": ok, "why": why, "hold_s": hold, **asdict(seen)}


def run(target: Target, hosts: Sequence[str], modes: Sequence[str], hold: float = HOLD_S,
        report: Callable[[dict[str, Any]], None] | None = None, out: Path | None = None,
        title: str = "") -> list[dict[str, Any]]:
    """Every (host, mode) case in turn, each from a healthy stack; with `out`, the results so far are written
    after each case (a run that stops half-way keeps them)."""
    results = []
    for host in hosts:
        for mode in modes:
            wait_healthy(target)
            result = run_case(target, host, mode, hold)
            results.append(result)
            if out:
                write(results, out, title)
            if report:
                report(result)
    return results


def table(results: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| host | mode | expected (design report) | observed | back after | verdict |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['host']} | {r['mode']} | {r['effect']}: {r['expected']} | {r['observed']} | "
              f"{r['back_after_s']} s | {'ok' if r['ok'] else 'WRONG'}: {r['why']} |" for r in results]
    return "\n".join(lines) + "\n"


def write(results: Sequence[Mapping[str, Any]], base: Path, title: str) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_text(json.dumps(list(results), indent=2) + "\n", encoding="utf-8")
    base.with_suffix(".md").write_text(f"# Chaos run: {title}\n\n{table(results)}", encoding="utf-8")


def lab_target(stage: int) -> Target:
    """The running lab of a stage (make lab STAGE=n)."""
    import lab

    hosts = lab.load_hosts(stage)
    missing = [h.container for h in hosts if docker("inspect", h.container).returncode != 0]
    if missing:
        raise SystemExit(f"chaos: the stage {stage} lab is not up ({', '.join(missing)} missing): "
                         f"run make lab STAGE={stage} first")
    model = design.collect(ROOT / "inventories" / f"stage{stage}",
                           ROOT / "build" / "chaos" / f"stage{stage}-model.json")
    cafile = str(lab.pebble_root(stage)) if model.get("tls") else None
    return Target(model, {h.name: h.container for h in hosts}, lab.entry_address(stage), cafile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", type=int, choices=range(4))
    parser.add_argument("--hosts", nargs="*", help="these hosts only (default: every host, in name order)")
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--hold", type=float, default=HOLD_S, help="seconds each host stays lost")
    args = parser.parse_args(argv)
    target = lab_target(args.stage)
    hosts = args.hosts or sorted(target.model["hosts"])
    unknown = sorted(set(hosts) - set(target.model["hosts"]))
    if unknown:
        parser.error(f"not in the stage {args.stage} inventory: {', '.join(unknown)}")
    base = ROOT / "build" / "chaos" / f"stage{args.stage}"
    results = run(target, hosts, args.modes, args.hold,
                  report=lambda r: print(f"chaos: {r['host']} {r['mode']}: {r['observed']} -> "
                                         f"{'ok' if r['ok'] else 'WRONG'} ({r['why']})", flush=True),
                  out=base, title=f"stage {args.stage}")
    print(table(results), end="")
    print(f"chaos: {base}.md")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
