"""Filters of the keepalived role: check its settings, and its addresses against the interface's facts.

Python's ipaddress, not ansible.utils.ipaddr: that filter needs the netaddr package, which the controller's
pinned environment does not have.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any


def _ipv4(value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        return None


def _int_in(settings: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """The setting as an int when it is a whole number within [low, high], else None."""
    value = settings.get(name)
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if low <= number <= high else None


def _bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# keepalived's parser ends a word at a blank, reads a double quote as quoting and '#' or '!' as a comment.
AUTH_PASS = re.compile(r'^[^\s"#!]{1,8}$')
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
TRACK_COMMAND = re.compile(r'^/[^"]*$')
RANGES = {
    "keepalived_virtual_router_id": (1, 255, "the same on every member, unique on the network segment"),
    "keepalived_priority": (1, 254, "255 is reserved for the owner of the address"),
    "keepalived_preempt_delay": (0, 1000, "seconds"),
    "keepalived_vip_prefix": (1, 32, "an IPv4 prefix length"),
    "keepalived_track_interval": (1, 3600, "seconds"),
    "keepalived_track_fall": (1, 1000, "runs"),
    "keepalived_track_rise": (1, 1000, "runs"),
    "keepalived_track_soft_fall": (1, 1000, "runs"),
    "keepalived_track_weight": (-253, 253, "0 = FAULT state"),
}


def _centiseconds(value: Any) -> int | None:
    """A number of seconds as whole centiseconds (VRRPv3's unit), None when it is not a number or finer than that."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    centi = round(seconds * 100)
    return centi if abs(seconds * 100 - centi) < 1e-6 else None


def advert_int_error(version: Any, advert_int: Any) -> str | None:
    """Why keepalived_advert_int does not suit keepalived_vrrp_version (None = it does).

    VRRPv2 counts whole seconds (1-255); VRRPv3 counts centiseconds (0.01-40.95 s), which is what makes a
    sub-second failover possible.
    """
    centi = _centiseconds(advert_int)
    if str(version).strip() == "3":
        if centi is None or not 1 <= centi <= 4095:
            return (f"keepalived_advert_int must be 0.01..40.95 seconds in steps of 0.01 with VRRPv3, "
                    f"got {advert_int!r}")
        return None
    if centi is None or centi % 100 or not 1 <= centi // 100 <= 255:
        return (f"keepalived_advert_int must be a whole number 1..255 with VRRPv2 (sub-second adverts need "
                f"keepalived_vrrp_version 3), got {advert_int!r}")
    return None


def keepalived_input_errors(settings: Mapping[str, Any]) -> list[str]:
    """What is wrong with the role's settings, one message per problem naming the variable (empty = fine).

    `settings` maps the role's variable names to their values. The password is never quoted.
    """
    errors: list[str] = []
    version = str(settings.get("keepalived_vrrp_version", 2)).strip()
    if version not in ("2", "3"):
        errors.append(f"keepalived_vrrp_version must be 2 or 3, got {settings.get('keepalived_vrrp_version')!r}")
    elif version == "3" and str(settings.get("keepalived_auth_pass", "")):
        errors.append("keepalived_auth_pass must be empty with keepalived_vrrp_version 3: VRRPv3 has no "
                      "authentication (keepalived would ignore it); restrict VRRP to the peers with the firewall")
    elif version == "2" and not AUTH_PASS.match(str(settings.get("keepalived_auth_pass", ""))):
        errors.append("keepalived_auth_pass must be 1-8 characters without blanks, double quotes, '#' or '!' "
                      "(VRRP PASS authentication keeps 8; keepalived reads a blank as the end of a word and "
                      "'#' or '!' as a comment)")
    advert_error = advert_int_error(version, settings.get("keepalived_advert_int"))
    if advert_error:
        errors.append(advert_error)
    for name, (low, high, hint) in RANGES.items():
        if _int_in(settings, name, low, high) is None:
            errors.append(f"{name} must be a whole number {low}..{high} ({hint}), got {settings.get(name)!r}")
    if _bool(settings.get("keepalived_nopreempt")) and _int_in(settings, "keepalived_track_weight", 0, 0) is None:
        errors.append("keepalived_track_weight must be 0 with keepalived_nopreempt: without preemption a lowered "
                      "priority never moves the VIP, only the FAULT state of weight 0 does")
    soft = str(settings.get("keepalived_track_soft_command", "") or "")
    if soft:
        if not TRACK_COMMAND.match(soft):
            errors.append("keepalived_track_soft_command must start with an absolute path and hold no double quote, "
                          f"got {soft!r}")
        if _int_in(settings, "keepalived_track_soft_weight", -253, -1) is None:
            errors.append("keepalived_track_soft_weight must be a whole number -253..-1 (a priority drop), got "
                          f"{settings.get('keepalived_track_soft_weight')!r}")
        if _bool(settings.get("keepalived_nopreempt")):
            errors.append("keepalived_track_soft_command needs preemption: with keepalived_nopreempt a lowered "
                          "priority never moves the VIP (set it to \"\" or keepalived_nopreempt to false)")
    if not TRACK_COMMAND.match(str(settings.get("keepalived_track_command", ""))):
        errors.append("keepalived_track_command must start with an absolute path and hold no double quote, got "
                      f"{settings.get('keepalived_track_command')!r}")
    if not INSTANCE_NAME.match(str(settings.get("keepalived_instance_name", ""))):
        errors.append("keepalived_instance_name may hold only letters, digits, _ . -, got "
                      f"{settings.get('keepalived_instance_name')!r}")
    if not str(settings.get("keepalived_interface", "")).strip():
        errors.append("keepalived_interface is empty: gather network facts (its default is the interface of "
                      "the default route) or set it")
    vip = settings.get("keepalived_vip", "")
    src_ip = settings.get("keepalived_unicast_src_ip", "")
    peers = settings.get("keepalived_unicast_peers") or []
    if isinstance(peers, str):
        errors.append(f"keepalived_unicast_peers must be a list of addresses, got the string {peers!r}")
        peers = []
    peer_list = [str(p) for p in peers]
    if _ipv4(vip) is None:
        errors.append(f"keepalived_vip {vip!r} is not an IPv4 address")
    if _ipv4(src_ip) is None:
        errors.append(f"keepalived_unicast_src_ip {src_ip!r} is not an IPv4 address (were facts gathered?)")
    if not peer_list:
        errors.append("keepalived_unicast_peers is empty: list the other members' addresses "
                      "(is the group they come from empty, or were their facts not gathered?)")
    for peer in peer_list:
        if _ipv4(peer) is None:
            errors.append(f"keepalived_unicast_peers: {peer!r} is not an IPv4 address")
    if len(set(peer_list)) != len(peer_list):
        errors.append(f"keepalived_unicast_peers {peer_list} lists an address twice")
    if _ipv4(src_ip) is not None and str(src_ip) in peer_list:
        errors.append(f"keepalived_unicast_peers {peer_list} holds this host's own keepalived_unicast_src_ip {src_ip}")
    if _ipv4(vip) is not None and str(vip) in [*peer_list, str(src_ip)]:
        errors.append(f"keepalived_vip {vip} is also a member's own address")
    return errors


def keepalived_interface_networks(interface_facts: Mapping[str, Any]) -> list[str]:
    """The IPv4 networks of an interface's facts (primary address and secondaries), as CIDR strings."""
    entries = [interface_facts.get("ipv4") or {}, *(interface_facts.get("ipv4_secondaries") or [])]
    networks: list[str] = []
    for entry in entries:
        if entry.get("address") and entry.get("netmask"):
            network = str(ipaddress.IPv4Interface(f"{entry['address']}/{entry['netmask']}").network)
            if network not in networks:
                networks.append(network)
    return networks


def keepalived_networks_holding(address: Any, networks: Iterable[str]) -> list[str]:
    """The networks in which `address` is a host address (inside, and neither network nor broadcast address)."""
    ip = _ipv4(address)
    found = []
    for cidr in networks:
        network = ipaddress.IPv4Network(cidr)
        if ip is None or ip not in network:
            continue
        if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
            continue
        found.append(cidr)
    return found


class FilterModule:
    """keepalived role filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "keepalived_input_errors": keepalived_input_errors,
            "keepalived_interface_networks": keepalived_interface_networks,
            "keepalived_networks_holding": keepalived_networks_holding,
        }
