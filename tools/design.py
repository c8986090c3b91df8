#!/usr/bin/env python3
"""A stage's design from its inventory: a Markdown report with a single-point-of-failure table, and a diagram.

    python tools/design.py STAGE                  # inventories/stage<N> -> build/design/stage<N>.{json,md,svg,png}
    python tools/design.py --inventory PATH       # any inventory
    python tools/design.py --docs                 # the four stages -> docs/design/ (committed; README shows them)

The model comes from playbooks/design-model.yml: the groups, each host's roles and the firewall flows those roles
declare (the data the ufw rules are made of), the entry point, DNS records, balancing, TLS and VRRP settings. The
analysis below is plain Python over that model: which hosts serve each component, and what losing one host does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "design"

# What one host's loss does, worst first.
SITE_DOWN = "site down"
WRITES_DOWN = "writes down"
FAILOVER = "failover gap"
MONITORING_DOWN = "monitoring down"
NOTHING = "nothing"
SEVERITY = [SITE_DOWN, WRITES_DOWN, FAILOVER, MONITORING_DOWN, NOTHING]


# The tiers of the read path, by group.
TIERS = {"load balancer": "loadbalancers", "web server": "webservers", "app server": "appservers",
         "database": "db_primary"}


def address(value: str) -> str:
    """A DNS record's value, or where the inventory names a host instead of an address: that host's address."""
    looks_like_ip = all(part.isdigit() for part in value.split(".")) and value.count(".") == 3
    return value if looks_like_ip or value.endswith(".") else f"<address of {value}>"


@dataclass(frozen=True)
class Loss:
    """The effect of losing one host: the worst effect, every effect, why, and the longest gap it should cost."""

    host: str
    effect: str
    effects: tuple[str, ...]
    why: str
    gap_s: float | None = None


def hosts_of(model: Mapping[str, Any], group: str) -> list[str]:
    return list(model["groups"].get(group) or [])


def vrrp_takeover_s(vrrp: Mapping[str, Any]) -> float:
    """Longest time nobody should be answered when the VIP holder goes silent: a backup takes over after 3 adverts
    + skew (< 1 advert), then its gratuitous ARP and the clients' retries (0.5 s)."""
    advert = float(vrrp.get("advert_int", 1))
    return round(4 * advert + 0.5, 2)


def expected(loss: Loss) -> str:
    """What a client should see while the host is gone (what make chaos checks)."""
    if loss.effect == SITE_DOWN:
        return "every request fails"
    if loss.effect == WRITES_DOWN:
        return "reads: 0 failed; writes: 503 until promotion"
    if loss.effect == FAILOVER:
        return f"no answer for ≤ {loss.gap_s} s (when it goes and when it takes the VIP back)"
    return "0 failed requests (a write in flight at that instant may fail: it is never replayed)"


def read_hosts(model: Mapping[str, Any], app: str) -> list[str]:
    """The database hosts `app` reads from, in order: its own server, else a replica (spread by order), then the
    primary (the app falls back to it when its read server does not answer)."""
    primary = hosts_of(model, "db_primary")
    replicas = hosts_of(model, "db_replicas")
    apps = hosts_of(model, "appservers")
    if app in primary + replicas:
        first = app
    elif replicas:
        first = replicas[apps.index(app) % len(replicas)]
    else:
        first = primary[0] if primary else ""
    return [h for h in dict.fromkeys([first, *primary]) if h]


def upstreams(model: Mapping[str, Any], web: str) -> list[str]:
    """The app hosts a web host proxies to: its own app server when it runs one, else the whole app tier."""
    apps = hosts_of(model, "appservers")
    return [web] if web in apps else apps


def serving(model: Mapping[str, Any], alive: set[str]) -> tuple[bool, bool]:
    """(reads, writes): can a request still be answered, and can a write still commit, with only `alive` up."""
    entry = hosts_of(model, model["entry_group"])
    if not any(h in alive for h in entry):
        return False, False
    reads = writes = False
    primary = hosts_of(model, "db_primary")
    for web in hosts_of(model, "webservers"):
        if web not in alive:
            continue
        for app in upstreams(model, web):
            if app not in alive:
                continue
            reads = reads or any(db in alive for db in read_hosts(model, app))
            writes = writes or any(db in alive for db in primary)
    return reads, reads and writes


def host_loss(model: Mapping[str, Any], host: str) -> Loss:
    """What losing `host` (killed or cut off, not restarted) does to the stage."""
    everyone = set(model["hosts"])
    reads, writes = serving(model, everyone - {host})
    effects: list[str] = []
    why: list[str] = []
    gap: float | None = 0.0
    if not reads:
        effects.append(SITE_DOWN)
        alone = [tier for tier, group in TIERS.items() if hosts_of(model, group) == [host]]
        why.append(f"the only {' and '.join(alone)}" if alone
                   else "no path from the entry point through a web and an app server to a database is left")
        gap = None
    elif not writes:
        effects.append(WRITES_DOWN)
        why.append("it is the primary: writes fail (503) until a replica is promoted; reads go on")
    lbs = hosts_of(model, "loadbalancers")
    if reads and model.get("vip") and lbs and host == lbs[0]:
        effects.append(FAILOVER)
        takeover = vrrp_takeover_s(model.get("vrrp") or {})
        why.append(f"it holds the VIP: the other load balancer takes it over (≤ {takeover} s)")
        gap = takeover
    if host in hosts_of(model, "monitoring") and not (set(hosts_of(model, "monitoring")) - {host}):
        effects.append(MONITORING_DOWN)
        why.append("the only monitoring server: no metrics, no alerts")
    if not effects:
        effects.append(NOTHING)
        why.append(redundancy_reason(model, host))
    effects.sort(key=SEVERITY.index)
    return Loss(host, effects[0], tuple(effects), "; ".join(why), gap)


def redundancy_reason(model: Mapping[str, Any], host: str) -> str:
    groups = model["hosts"][host]["groups"]
    if "loadbalancers" in groups:
        return "the VIP's backup: nothing moves"
    if "webservers" in groups or "appservers" in groups:
        return "another server of its tier answers (health checks take it out, requests are retried)"
    if "db_replicas" in groups:
        return "a replica: its readers fall back to the primary"
    return "nothing depends on it alone"


@dataclass(frozen=True)
class Component:
    name: str
    hosts: tuple[str, ...]
    mode: str
    loss: str


def components(model: Mapping[str, Any]) -> list[Component]:
    """Each component of the stage, its hosts, how they share the work, and what one instance's loss does."""
    losses = {host: host_loss(model, host) for host in model["hosts"]}

    def worst(hosts: Iterable[str]) -> str:
        effects = [losses[h].effect for h in hosts]
        return min(effects, key=SEVERITY.index) if effects else NOTHING

    result = []
    lbs = hosts_of(model, "loadbalancers")
    if lbs:
        mode = (f"active-passive, VRRPv{model['vrrp']['version']} VIP {model['vip']}" if model.get("vip")
                else "active" if len(lbs) == 1 else "active-active (DNS)")
        result.append(Component("load balancer (HAProxy)", tuple(lbs), mode, worst(lbs)))
    webs = hosts_of(model, "webservers")
    result.append(Component("web server (nginx)", tuple(webs),
                            f"active-active, {model.get('balance') or 'DNS'}" if len(webs) > 1 else "single",
                            worst(webs)))
    apps = hosts_of(model, "appservers")
    result.append(Component("app server (gunicorn)", tuple(apps),
                            "active-active" if len(apps) > 1 else "single", worst(apps)))
    primary, replicas = hosts_of(model, "db_primary"), hosts_of(model, "db_replicas")
    result.append(Component("database primary (MariaDB)", tuple(primary), "writes", worst(primary)))
    if replicas:
        result.append(Component("database replica (MariaDB)", tuple(replicas), "reads, GTID replication",
                                worst(replicas)))
    mons = hosts_of(model, "monitoring")
    if mons:
        result.append(Component("monitoring (Prometheus, Alertmanager)", tuple(mons), "single" if len(mons) == 1
                                else "redundant", worst(mons)))
    return result


def spofs(model: Mapping[str, Any]) -> dict[str, list[str]]:
    """Single points of failure: effect -> hosts whose loss alone causes it (site down, writes down)."""
    found: dict[str, list[str]] = {SITE_DOWN: [], WRITES_DOWN: [], MONITORING_DOWN: []}
    for host in sorted(model["hosts"]):
        for effect in host_loss(model, host).effects:
            if effect in found:
                found[effect].append(host)
    return found


@dataclass(frozen=True)
class Edge:
    source: str  # a group, or "any"
    target: str  # a host
    proto: str
    port: int | None
    role: str = ""  # the role on the target that declared the flow

    @property
    def label(self) -> str:
        return self.proto if self.port is None else f"{self.proto}/{self.port}"


def edges(model: Mapping[str, Any]) -> list[Edge]:
    """Every allowed flow (the firewall rules' source), SSH from the admin networks included."""
    found = []
    for host, info in sorted(model["hosts"].items()):
        for flow in info["flows"]:
            port = flow.get("port")
            found.append(Edge(str(flow["from_group"]), host, str(flow["proto"]), int(port) if port else None,
                              str(flow.get("role", ""))))
        for source in info.get("ssh_sources") or []:
            found.append(Edge(f"admin {source}", host, "tcp", 22))
    return sorted(set(found), key=lambda e: (e.target, e.source, e.proto, e.port or 0, e.role))


def model_digest(model: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:12]


def request_path(model: Mapping[str, Any]) -> list[str]:
    site = model["site"]
    scheme = "https" if model.get("tls") else "http"
    records = ", ".join(f"{r['name']} {r['type']} {address(r['value'])}" for r in model["dns"])
    steps = [f"The browser resolves {site} ({records})."]
    lbs = hosts_of(model, "loadbalancers")
    web_hop = f"TLS to port {model['web_port']}" if model.get("backend_tls") else f"HTTP to port {model['web_port']}"
    if lbs:
        holder = f"the VIP {model['vip']}, held by {lbs[0]} (else {', '.join(lbs[1:])})" if model.get("vip") \
            else lbs[0]
        steps.append(f"It opens {scheme}://{site}/ on {holder}: HAProxy"
                     + (" terminates TLS (certificate from ACME)" if model.get("tls") else "")
                     + f" and picks a web server {model.get('balance') or ''} "
                       f"({', '.join(hosts_of(model, 'webservers'))}), {web_hop}.")
    else:
        steps.append(f"It opens {scheme}://{site}/ on {hosts_of(model, 'webservers')[0]}: nginx.")
    web = hosts_of(model, "webservers")[0]
    apps = upstreams(model, web)
    where = "on the same host" if apps == [web] else f"over the network ({', '.join(apps)}, port {model['app_port']})"
    steps.append(f"nginx on {web} serves static files itself and passes the page to gunicorn {where}.")
    app = apps[0]
    reads = read_hosts(model, app)
    primary = hosts_of(model, "db_primary")
    steps.append(f"The app on {app} reads from MariaDB on {reads[0]}"
                 + (f" (else {', '.join(reads[1:])})" if len(reads) > 1 else "")
                 + f" and writes to the primary {primary[0]}.")
    return steps


def report(model: Mapping[str, Any]) -> str:
    """The Markdown design report of a stage."""
    lines = [f"# Design of {model['name']} (stage {model['stage']})", "",
             (f"Generated by `make design` from the inventory and the wiring (model {model_digest(model)}); "
              "do not edit."), "", "## Hosts", "", "| host | groups | roles |", "|---|---|---|"]
    for host, info in sorted(model["hosts"].items()):
        lines.append(f"| {host} | {', '.join(info['groups'])} | {', '.join(info['roles'])} |")
    lines += ["", "## Path of one request", ""]
    lines += [f"{n}. {step}" for n, step in enumerate(request_path(model), 1)]
    lines += ["", "## DNS records", "", "| name | type | value |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['type']} | {address(r['value'])} |" for r in model["dns"]]
    lines += ["", "## Components", "", "| component | hosts | mode | losing one |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {', '.join(c.hosts)} | {c.mode} | {c.loss} |" for c in components(model)]
    primary, replicas = hosts_of(model, "db_primary"), hosts_of(model, "db_replicas")
    lines += ["", "## Replication", ""]
    lines.append(f"{primary[0]} (primary) → {', '.join(replicas)} (GTID replicas, read-only)" if replicas
                 else f"{primary[0]} alone: no replica, a lost disk loses the data since the last backup.")
    lines += ["", "## Losing one host", "", "| host | effect | why | a client sees |", "|---|---|---|---|"]
    for host in sorted(model["hosts"]):
        loss = host_loss(model, host)
        lines.append(f"| {host} | {', '.join(loss.effects)} | {loss.why} | {expected(loss)} |")
    found = spofs(model)
    lines += ["", "## Single points of failure", ""]
    for effect in (SITE_DOWN, WRITES_DOWN, MONITORING_DOWN):
        lines.append(f"- {effect}: {', '.join(found[effect]) or 'none'}")
    lines += ["", "## Allowed flows (the firewall rules)", "", "| to host | from | protocol/port |", "|---|---|---|"]
    lines += [f"| {e.target} | {e.source} | {e.label} |" for e in edges(model)]
    return "\n".join(lines) + "\n"


def collect(inventory: Path, out: Path) -> dict[str, Any]:
    """Run playbooks/design-model.yml on `inventory` (no host contacted) and return the model it wrote."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as secrets:  # nothing is generated, but never near real secrets
        env = dict(os.environ, WEBSTACK_SECRETS_DIR=secrets, ANSIBLE_CACHE_PLUGIN="memory")
        result = subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "design-model.yml"), "-i",
                                 str(inventory), "-e", json.dumps({"webstack_design_model": str(out)})],
                                cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"design: the model of {inventory} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    model = canonical(json.loads(out.read_text(encoding="utf-8")))
    out.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model


def canonical(model: dict[str, Any]) -> dict[str, Any]:
    """The model with each host's flows in a stable order (Ansible's set filters do not keep one)."""
    for info in model["hosts"].values():
        info["flows"] = sorted(info["flows"], key=lambda f: (f["proto"], f.get("port") or 0, f["from_group"],
                                                             f.get("role", "")))
    return model


def draw(model: Mapping[str, Any], path: Path, formats: tuple[str, ...]) -> None:
    """The diagram next to `path` (.svg, .png), with the `diagrams` package (needs Graphviz's dot)."""
    from diagram_render import render

    render(model, path, edges(model), {h: host_loss(model, h).effect for h in model["hosts"]}, model_digest(model),
           address, formats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", type=int, choices=range(4))
    parser.add_argument("--inventory", type=Path)
    parser.add_argument("--docs", action="store_true", help="regenerate docs/design/ for the four stages")
    parser.add_argument("--no-diagram", action="store_true", help="the model and the report only")
    args = parser.parse_args(argv)
    if args.docs:
        targets = [(ROOT / "inventories" / f"stage{n}", DOCS / f"stage{n}") for n in range(4)]
    elif args.inventory:
        targets = [(args.inventory, ROOT / "build" / "design" / args.inventory.resolve().name)]
    elif args.stage is not None:
        targets = [(ROOT / "inventories" / f"stage{args.stage}", ROOT / "build" / "design" / f"stage{args.stage}")]
    else:
        parser.error("give a STAGE, --inventory PATH or --docs")
    for inventory, base in targets:
        model = collect(inventory, base.with_suffix(".json"))
        base.with_suffix(".md").write_text(report(model), encoding="utf-8")
        formats = ("svg",) if args.docs else ("svg", "png")  # the committed docs keep the SVG only
        if not args.no_diagram:
            draw(model, base, formats)
        print(f"design: {base}.md" + ("" if args.no_diagram else "".join(f", {base}.{f}" for f in formats)))
        print("".join(f"  {effect}: {', '.join(hosts) or 'none'}\n" for effect, hosts in spofs(model).items()), end="")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
