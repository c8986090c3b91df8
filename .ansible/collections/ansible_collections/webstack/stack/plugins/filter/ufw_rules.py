"""Filters of the ufw role: check its rule inputs and find the rules ufw holds that nobody declared.

ufw records every rule it manages as a `### tuple ###` line in /etc/ufw/user.rules (IPv4) and
/etc/ufw/user6.rules (IPv6):

    ### tuple ### allow tcp 3306 0.0.0.0/0 any 10.0.0.12 in comment=6170702d3031
                 action proto dport dst sport src [dapp sapp] direction[_iface] [comment=hex]

The role compares those lines with the rules it wants (the same normalisation ufw applies: host bits
dropped, /32 and /128 written as a plain address, `any` = 0.0.0.0/0 and ::/0) and deletes the rest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

ANY_V4 = "0.0.0.0/0"
ANY_V6 = "::/0"
PROTOS = ("tcp", "udp", "vrrp")
# Protocols without ports (ufw writes `any` for the port of their rules).
PORTLESS = ("vrrp",)


def _normalise(source: str) -> str:
    """A source as ufw writes it in a tuple line (raises ValueError when it is no address)."""
    network = ipaddress.ip_network(source, strict=False)
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def ufw_rule_errors(rules: Iterable[Mapping[str, Any]], ssh_sources: Iterable[str], ssh_port: int) -> list[str]:
    """What is wrong with the rule inputs, one message per problem naming the variable (empty = fine)."""
    errors: list[str] = []
    sources = list(ssh_sources)
    if not sources:
        errors.append("ufw_ssh_sources is empty: list the admin networks allowed to reach SSH (or 'any')")
    for source in sources:
        if source != "any":
            try:
                _normalise(str(source))
            except ValueError:
                errors.append(f"ufw_ssh_sources: {source!r} is neither 'any' nor an IP address or CIDR")
    if not 1 <= int(ssh_port) <= 65535:
        errors.append(f"ufw_ssh_port: {ssh_port} is not a port (1-65535)")
    for index, rule in enumerate(rules):
        port = rule.get("port")
        if rule.get("proto") in PORTLESS:
            if port is not None:
                errors.append(f"ufw_rules[{index}]: proto {rule.get('proto')} has no ports (got port {port!r})")
        elif isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            errors.append(f"ufw_rules[{index}]: port {port!r} is not a port (1-65535)")
        if rule.get("proto") not in PROTOS:
            errors.append(f"ufw_rules[{index}]: proto {rule.get('proto')!r} is not one of {PROTOS}")
        source = str(rule.get("from", ""))
        if source != "any":
            try:
                _normalise(source)
            except ValueError:
                errors.append(f"ufw_rules[{index}]: from {source!r} is neither 'any' nor an IP address or CIDR")
        if "'" in str(rule.get("comment", "")):
            errors.append(f"ufw_rules[{index}]: the comment must not contain a single quote")
    return errors


def ufw_sources_cover(sources: Iterable[str], address: str) -> bool:
    """Whether `address` (the controller, as the host sees it) is inside one of the SSH sources."""
    client = ipaddress.ip_address(address)
    for source in sources:
        if source == "any":
            return True
        network = ipaddress.ip_network(source, strict=False)
        if network.version == client.version and client in network:
            return True
    return False


def ufw_wanted_rules(rules: Iterable[Mapping[str, Any]], ssh_port: int,
                     ssh_sources: Iterable[str]) -> list[dict[str, Any]]:
    """SSH from every admin source first, then the declared rules; each {port, proto, from, comment} (no port for
    a portless protocol)."""
    wanted: list[dict[str, Any]] = [{"port": int(ssh_port), "proto": "tcp", "from": str(source), "comment": "ssh admin"}
              for source in ssh_sources]
    for rule in rules:
        entry: dict[str, Any] = {"proto": str(rule["proto"]), "from": str(rule["from"]),
                                 "comment": str(rule.get("comment") or "")}
        if rule.get("port") is not None:
            entry["port"] = int(rule["port"])
        wanted.append(entry)
    return wanted


def _tuple_keys(rule: Mapping[str, Any]) -> list[tuple[str, ...]]:
    port, proto, source = str(rule.get("port", "any")), str(rule["proto"]), str(rule["from"])
    if source == "any":
        return [("allow", proto, port, ANY_V4, "any", ANY_V4, "in"),
                ("allow", proto, port, ANY_V6, "any", ANY_V6, "in")]
    normalised = _normalise(source)
    dst = ANY_V6 if ":" in normalised else ANY_V4
    return [("allow", proto, port, dst, "any", normalised, "in")]


def _delete_params(line: str, fields: list[str]) -> dict[str, Any]:
    """The community.general.ufw arguments that delete the rule of one tuple line."""
    action, proto, dport, dst, sport, src = fields[:6]
    direction = fields[-1]
    dapp, sapp = (fields[6], fields[7]) if len(fields) == 9 else ("-", "-")
    params: dict[str, Any] = {"line": line, "delete": True, "unsupported": ""}
    route = action.startswith("route:")
    rule, _, log = action.removeprefix("route:").partition("_")
    if log not in ("", "log") or sapp != "-" or "!" in direction or (route and "_" in direction):
        params["unsupported"] = "log-all, source-application, and route rules with interfaces"
    params.update(rule=rule, log=log == "log", route=route, from_ip=src, to_ip=dst)
    params["direction"], _, interface = direction.partition("_")
    if interface:
        params["interface"] = interface
    if sport != "any":
        params["from_port"] = sport
    if dapp != "-":
        params["name"] = dapp.replace("%20", " ")
    else:
        if dport != "any":
            params["to_port"] = dport
        if proto != "any":
            params["proto"] = proto
    return params


def ufw_stale_rules(tuple_lines: str, wanted: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rules ufw holds (its `### tuple ###` lines) that are not wanted, as arguments that delete them.

    Comments are ignored here (re-adding a wanted rule updates its comment). An entry whose
    `unsupported` is not empty is a rule the ufw module cannot delete; the role stops and names it.
    """
    keep = {key for rule in wanted for key in _tuple_keys(rule)}
    stale = []
    for raw in tuple_lines.splitlines():
        line = raw.strip()
        if not line.startswith("### tuple ###"):
            continue
        fields = [f for f in line.removeprefix("### tuple ###").split() if not f.startswith("comment=")]
        if len(fields) not in (7, 9):
            stale.append({"line": line, "unsupported": "an unknown tuple format"})
            continue
        if len(fields) == 7 and tuple(fields) in keep:
            continue
        stale.append(_delete_params(line, fields))
    return stale


def _comment(field: str) -> str | None:
    """The text of a tuple line's `comment=<hex>` field (None when it is not valid hex UTF-8)."""
    try:
        return bytes.fromhex(field.removeprefix("comment=")).decode("utf-8")
    except ValueError:
        return None


def ufw_missing_rules(tuple_lines: str, wanted: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Wanted rules ufw does not hold yet, or holds with another comment (re-adding updates the comment).

    The role adds only these: each `ufw` call reloads the firewall and costs a round trip.
    """
    held: set[tuple[tuple[str, ...], str | None]] = set()
    for raw in tuple_lines.splitlines():
        line = raw.strip()
        if not line.startswith("### tuple ###"):
            continue
        fields = line.removeprefix("### tuple ###").split()
        comments = [_comment(f) for f in fields if f.startswith("comment=")]
        held.add((tuple(f for f in fields if not f.startswith("comment=")), comments[0] if comments else ""))
    return [dict(rule) for rule in wanted
            if any((key, str(rule.get("comment") or "")) not in held for key in _tuple_keys(rule))]


def ufw_status(status_verbose: str) -> dict[str, Any]:
    """The parts of `ufw status verbose` the role compares: active, logging level, default policies.

    An inactive ufw reports none of them: logging and policies are then "" (unknown, so they are set).
    """
    state: dict[str, Any] = {"active": False, "logging": "", "incoming": "", "outgoing": ""}
    for line in status_verbose.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Status":
            state["active"] = value == "active"
        elif key == "Logging":
            state["logging"] = "off" if value == "off" else value.removeprefix("on").strip(" ()") or "on"
        elif key == "Default":
            for policy in value.split(","):
                action, _, direction = policy.strip().partition(" ")
                state[direction.strip("()")] = action
    return state


def ufw_logging_matches(status: Mapping[str, Any], wanted: str) -> bool:
    """Whether the running logging level is the wanted one (`on` accepts any level but off)."""
    now = str(status.get("logging", ""))
    if wanted == "on":
        return now not in ("", "off")
    return now == wanted


class FilterModule:
    """ufw role filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "ufw_rule_errors": ufw_rule_errors,
            "ufw_sources_cover": ufw_sources_cover,
            "ufw_wanted_rules": ufw_wanted_rules,
            "ufw_stale_rules": ufw_stale_rules,
            "ufw_missing_rules": ufw_missing_rules,
            "ufw_status": ufw_status,
            "ufw_logging_matches": ufw_logging_matches,
        }
