"""Filter for a host firewall: the concrete rules of the flows its roles declare (webstack.stack.firewall_rules).

Each role tells the world the traffic it serves as a variable, `<role>_firewall_flows`: a list of
{port, proto, from_group}. This filter resolves the groups to addresses for one host; the ufw role applies the
result as its `ufw_rules`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

FIREWALL_PROTOS = ("tcp", "udp", "vrrp")
# Protocols without ports (VRRP is IP protocol 112): their flows and rules carry no port.
PORTLESS_PROTOS = ("vrrp",)


def _source_sort_key(source: str) -> tuple[int, int, int, int]:
    if source == "any":
        return (0, 0, 0, 0)
    network = ipaddress.ip_network(source, strict=False)
    return (1, network.version, int(network.network_address), network.prefixlen)


def _flow_port(flow: Mapping[str, Any], proto: str) -> int | None:
    """The flow's port: 1-65535 for tcp/udp, none for a portless protocol (vrrp)."""
    port = flow.get("port")
    if proto in PORTLESS_PROTOS:
        if port not in (None, ""):
            raise ValueError(f"firewall_rules: flow {dict(flow)} is {proto}, which has no ports")
        return None
    try:
        number = int(str(port))
    except ValueError:
        number = 0
    if isinstance(port, bool) or not 1 <= number <= 65535:
        raise ValueError(f"firewall_rules: flow {dict(flow)} has no valid port (1-65535)")
    return number


def firewall_rules(flows: Iterable[Mapping[str, Any]], groups: Mapping[str, Iterable[str]],
                   hostvars: Mapping[str, Any], address_var: str = "webstack_address",
                   self_host: str | None = None) -> list[dict[str, Any]]:
    """Concrete ufw rules ({port, proto, from, comment}) from declared flows ({port, proto, from_group}); a flow of a
    portless protocol (vrrp) has no port and gives rules without one.

    `from_group: any` allows every source; a group allows the `address_var` of each of its hosts except
    `self_host` (its own traffic arrives on the loopback interface, which ufw always accepts). One rule per
    (port, proto, source), sorted; the comment names the groups and hosts the rule came from.
    """
    found: dict[tuple[int | None, str, str], tuple[set[str], set[str]]] = {}
    for flow in flows:
        proto = str(flow.get("proto", "tcp"))
        if proto not in FIREWALL_PROTOS:
            raise ValueError(
                f"firewall_rules: flow {dict(flow)} has proto {proto!r}, expected one of {FIREWALL_PROTOS}")
        port = _flow_port(flow, proto)
        group = flow.get("from_group")
        if not group:
            raise ValueError(f"firewall_rules: flow {dict(flow)} has no from_group")
        group = str(group)
        if group == "any":
            sources = [("any", "")]
        elif group not in groups:
            raise ValueError(f"firewall_rules: unknown group {group!r} in flow {dict(flow)} (not in the inventory)")
        else:
            sources = []
            for host in groups[group]:
                if host == self_host:
                    continue
                address = hostvars[host].get(address_var) if host in hostvars else None
                if not address:
                    raise ValueError(f"firewall_rules: host {host} of group {group} has no {address_var}")
                try:
                    network = ipaddress.ip_network(str(address), strict=False)
                except ValueError as error:
                    raise ValueError(f"firewall_rules: {address_var} of host {host} is {address!r}, "
                                     f"not an IP address (were facts gathered?)") from error
                source = str(network.network_address if network.num_addresses == 1 else network)
                sources.append((source, str(host)))
        for source, host in sources:
            names, hosts = found.setdefault((port, proto, source), (set(), set()))
            names.add(group)
            if host:
                hosts.add(host)
    rules = []
    for (port, proto, source), (names, hosts) in sorted(
            found.items(), key=lambda item: (item[0][0] or 0, item[0][1], _source_sort_key(item[0][2]))):
        comment = "webstack " + ",".join(sorted(names)) + (" " + ",".join(sorted(hosts)) if hosts else "")
        rule: dict[str, Any] = {"proto": proto, "from": source, "comment": comment}
        if port is not None:
            rule["port"] = port
        rules.append(rule)
    return rules


class FilterModule:
    """webstack.stack.firewall_rules."""

    def filters(self) -> dict[str, Any]:
        return {"firewall_rules": firewall_rules}
