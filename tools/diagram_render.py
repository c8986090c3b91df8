"""Draw a stage's design with the `diagrams` package (PyPI) and Graphviz's dot (Debian package graphviz).

One cluster per host, coloured by what losing it does, its firewall's open ports in its label; an arrow with
protocol and port for every allowed flow (the same flows the ufw rules are made of).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class FlowEdge(Protocol):
    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def label(self) -> str: ...


# What losing the host does -> cluster background.
COLOURS = {"site down": "#f8d0d0", "writes down": "#fbe3c4", "failover gap": "#fdf5c2",
           "monitoring down": "#dbe8f8", "nothing": "#d9f2d9"}


def _node(role: str, label: str) -> Any:
    from diagrams.onprem.certificates import LetsEncrypt
    from diagrams.onprem.database import Mariadb
    from diagrams.onprem.monitoring import Prometheus
    from diagrams.onprem.network import Gunicorn, Haproxy, Nginx

    kinds = {"haproxy": Haproxy, "nginx": Nginx, "app": Gunicorn, "mysql": Mariadb, "monitoring_server": Prometheus,
             "certbot": LetsEncrypt}
    return kinds[role](label)


# The node a group's traffic starts from.
GROUP_ROLE = {"loadbalancers": "haproxy", "webservers": "nginx", "appservers": "app", "db_primary": "mysql",
              "db_replicas": "mysql", "monitoring": "monitoring_server"}
SHOWN = ("haproxy", "certbot", "nginx", "app", "mysql", "monitoring_server")


def render(model: Mapping[str, Any], base: Path, flows: Sequence[FlowEdge], losses: Mapping[str, str],
           digest: str, address: Callable[[str], str], formats: Sequence[str] = ("svg", "png")) -> None:
    """Write `base`.svg and `base`.png (or the `formats` given)."""
    import itertools
    from unittest import mock

    import diagrams

    base.parent.mkdir(parents=True, exist_ok=True)
    # Node ids in creation order instead of random ones: the same model draws the same SVG (no churn in docs/).
    ids = (f"node{n}" for n in itertools.count())
    with mock.patch.object(diagrams.Node, "_rand_id", staticmethod(lambda: next(ids))):
        _draw(model, base, flows, losses, digest, address, formats)


def _draw(model: Mapping[str, Any], base: Path, flows: Sequence[FlowEdge], losses: Mapping[str, str],
          digest: str, address: Callable[[str], str], formats: Sequence[str]) -> None:
    from diagrams import Cluster, Diagram, Edge
    from diagrams.generic.network import Router
    from diagrams.onprem.client import Users
    from diagrams.onprem.network import Bind9

    title = f"{model['name']}: {model['site']} (model {digest})"
    graph = {"fontsize": "20", "pad": "0.4", "splines": "spline", "nodesep": "0.5", "ranksep": "1.1"}
    with Diagram(title, filename=str(base), outformat=list(formats), show=False, direction="LR", graph_attr=graph):
        users = Users("users")
        dns = Bind9("DNS\n" + "\n".join(f"{r['name']} {r['type']} {address(r['value'])}" for r in model["dns"]))
        users >> Edge(label="resolve") >> dns
        entry: Any = users
        if model.get("vip"):
            vrrp = model.get("vrrp") or {}
            entry = Router(f"VIP {model['vip']}\nVRRPv{vrrp.get('version')} every {vrrp.get('advert_int')} s")
            users >> Edge(label="https" if model.get("tls") else "http") >> entry
        nodes_of: dict[str, dict[str, Any]] = {}
        for host, info in sorted(model["hosts"].items()):
            ports = sorted({f.label for f in flows if f.target == host})
            label = f"{host}: {', '.join(info['groups'])}\nufw allows {', '.join(ports)}\nlosing it: {losses[host]}"
            with Cluster(label, graph_attr={"bgcolor": COLOURS.get(losses[host], "#eeeeee"), "fontsize": "12"}):
                nodes_of[host] = {role: _node(role, role if role != "mysql" else _db_label(model, host))
                                  for role in SHOWN if role in info["roles"]}
        groups = model["groups"]
        def main(host: str, role: str = "") -> Any:
            """The node a flow reaches: the role's own, else (an agent, keepalived) the host's first one."""
            nodes = nodes_of.get(host) or {}
            return nodes.get(role) or next(iter(nodes.values()), None)

        for flow in flows:
            target = main(flow.target, flow.role)
            if target is None or flow.source.startswith("admin "):
                continue
            role = GROUP_ROLE.get(flow.source, "")
            sources = ([entry] if flow.source == "any"
                       else [main(h, role) for h in groups.get(flow.source, []) if main(h, role) is not None])
            for source in sources:
                if source is not target:
                    source >> Edge(label=flow.label, fontsize="10") >> target
    if "svg" in formats:
        inline_images(base.with_suffix(".svg"))


def inline_images(svg: Path) -> None:
    """Embed the icons Graphviz links by absolute path (inside the diagrams package) as data: URIs, so the SVG
    shows the same anywhere (a README, another machine)."""
    text = svg.read_text(encoding="utf-8")

    def embed(match: re.Match[str]) -> str:
        data = base64.b64encode(Path(match.group(1)).read_bytes()).decode()
        return f'xlink:href="data:image/png;base64,{data}"'

    svg.write_text(re.sub(r'xlink:href="(/[^"]+\.png)"', embed, text), encoding="utf-8")


def _db_label(model: Mapping[str, Any], host: str) -> str:
    if host in model["groups"].get("db_primary", []):
        return "MariaDB primary"
    return "MariaDB replica"
