"""Filter of the haproxy role: backend servers from an inventory group (webstack.stack.backend_servers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def backend_servers(hosts: Iterable[str], hostvars: Mapping[str, Any], port: int,
                    address_var: str = "webstack_address") -> list[dict[str, Any]]:
    """Load-balancer members from an inventory group: one {name, address, port} per host.

    The address is the host's `address_var`, else its ansible_host, else its inventory name.
    """
    servers = []
    for host in hosts:
        address = hostvars[host].get(address_var) or hostvars[host].get("ansible_host") or host
        servers.append({"name": str(host), "address": str(address), "port": int(port)})
    return servers


class FilterModule:
    """webstack.stack.backend_servers."""

    def filters(self) -> dict[str, Any]:
        return {"backend_servers": backend_servers}
