"""The site wiring's filters: inventory facts into the data roles take (pure functions, unit-tested).

The filters a role itself uses, or its README's examples, travel with the roles in the collection
(plugins/filter, called as webstack.stack.<name>); these serve the playbooks of this repository only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


def dns_records(names: Iterable[str], zone: str, addresses: Iterable[str], ttl: int = 300) -> list[dict[str, Any]]:
    """The records a stage needs: A records of the zone apex, CNAMEs of the other names to the apex."""
    zone = zone.rstrip(".")
    targets = sorted(set(addresses))
    if not targets:
        raise ValueError("dns_records: no address for the entry point (is the entry group empty?)")
    records = [{"name": zone + ".", "type": "A", "ttl": ttl, "value": a} for a in targets]
    for name in names:
        fqdn = name.rstrip(".")
        if fqdn == zone:
            continue
        if not fqdn.endswith("." + zone):
            raise ValueError(f"dns_records: {name} is not inside the zone {zone}")
        records.append({"name": fqdn + ".", "type": "CNAME", "ttl": ttl, "value": zone + "."})
    return records


def zone_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Records as zone-file lines, for humans."""
    return [f"{r['name']:<24} {r['ttl']:>5} IN {r['type']:<5} {r['value']}" for r in records]


def group_roles(group_names: Iterable[str], roles_by_group: Mapping[str, list[str]]) -> list[str]:
    """Roles a host holds, in first-seen order, from its groups and the group -> roles map."""
    roles: list[str] = []
    for group in group_names:
        for role in roles_by_group.get(group, []):
            if role not in roles:
                roles.append(role)
    return roles


def role_packages(roles: Iterable[str], roles_dir: str, host_vars: Mapping[str, Any]) -> list[str]:
    """Union of `<role>_packages` of the given roles: the host's own value wins over the role default.

    Lets one apt transaction install what every role of a host needs before the roles run.
    """
    return [str(package) for package in role_values(roles, roles_dir, host_vars, "packages")]


def role_values(roles: Iterable[str], roles_dir: str, host_vars: Mapping[str, Any], suffix: str) -> list[Any]:
    """Concatenation of the list `<role>_<suffix>` of each role: the host's own value wins over the role default.

    For tools outside Ansible (make bench's package floor) only: read from the defaults files, the values are not
    templated. Playbooks read a role's exports as variables (playbooks/tasks/role-exports.yml).

    Equal items are kept once, in first-seen order.
    """
    values: list[Any] = []
    for role in roles:
        key = f"{role}_{suffix}"
        if key in host_vars:
            wanted = host_vars[key]
            source = "the host's variables"
        else:
            defaults_file = Path(roles_dir) / role / "defaults" / "main.yml"
            if not defaults_file.is_file():
                raise ValueError(f"role_values: {key} is not set and {defaults_file} does not exist")
            defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) or {}
            if key not in defaults:
                raise ValueError(f"role_values: {defaults_file} defines no {key}")
            wanted = defaults[key]
            source = str(defaults_file)
        if not isinstance(wanted, list):
            raise TypeError(f"role_values: {key} from {source} must be a list, got {type(wanted).__name__}")
        for value in wanted:
            if value not in values:
                values.append(value)
    return values


# What HAProxy accepts as a proxy or server name.
HAPROXY_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")


def drain_commands(load_balancers: Iterable[str], backend: str, server: str, drain_wait: int = 10,
                   ready_wait: int = 30, helper: str = "/usr/local/sbin/haproxy-server") -> list[dict[str, str]]:
    """Per load balancer: the shell commands that take `server` out of `backend` (waiting for its sessions to
    end) and put it back (waiting until its health check says UP), for handlers that interrupt a server.

    The helper exits 1 when the wait ran out and 3 when the load balancer does not know the server.
    """
    for name, value in (("backend", backend), ("server", server)):
        if not HAPROXY_NAME.fullmatch(value):  # they end up in a shell command line
            raise ValueError(f"drain_commands: {name} must be a HAProxy name (A-Z a-z 0-9 . _ : -), got {value!r}")
    # No helper yet (the load balancer is not set up, e.g. on a first converge): nothing to drain.
    guard = f"[ -x {helper} ] || exit 0; "
    return [{"host": str(lb),
             "drain": f"{guard}{helper} {backend} {server} drain --wait {int(drain_wait)}",
             "ready": f"{guard}{helper} {backend} {server} ready --wait {int(ready_wait)}"} for lb in load_balancers]


UPSTREAM_SERVER = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


def upstream_drain_commands(web_servers: Iterable[str], server: str, drain_wait: int = 10,
                            helper: str = "/usr/local/sbin/nginx-upstream") -> list[dict[str, str]]:
    """Per web server: the shell commands that take the upstream `server` (address:port) out of its nginx
    (reloaded; waiting for the requests in flight) and put it back, for handlers that interrupt an app server
    nginx proxies to directly. The helper exits 1 when the wait ran out and 3 when nginx does not name the server."""
    if not UPSTREAM_SERVER.fullmatch(server):  # it ends up in a shell command line
        raise ValueError(f"upstream_drain_commands: server must be host:port (A-Z a-z 0-9 . -), got {server!r}")
    guard = f"[ -x {helper} ] || exit 0; "
    return [{"host": str(web),
             "drain": f"{guard}{helper} {server} drain --wait {int(drain_wait)}",
             "ready": f"{guard}{helper} {server} ready"} for web in web_servers]


def secret_fingerprints(secrets: Mapping[str, str], salt: str) -> dict[str, str]:
    """Salted SHA-256 of each secret: what a host remembers of the secrets it was converged with -- enough to
    notice that a run brings another value, nothing to log in with (the host's configs hold the values anyway)."""
    if len(salt) < 16:
        raise ValueError("secret_fingerprints: the salt must be at least 16 characters")
    return {name: hashlib.sha256(f"{salt}:{name}:{value}".encode()).hexdigest()
            for name, value in sorted(secrets.items())}


def changed_secrets(secrets: Mapping[str, str], remembered: Any, allowed: Iterable[str] = ()) -> list[str]:
    """Names of the secrets whose value differs from the fingerprint a host remembers ({salt, fingerprints}, as
    secret_fingerprints wrote it). A secret the host never held, and one in `allowed`, does not count."""
    if not remembered:
        return []
    if not isinstance(remembered, Mapping) or not isinstance(remembered.get("fingerprints"), Mapping):
        raise TypeError("changed_secrets: the remembered fingerprints are not {salt, fingerprints}")
    stored = remembered["fingerprints"]
    now = secret_fingerprints(secrets, str(remembered.get("salt", "")))
    skip = set(allowed)
    return [name for name, print_ in now.items() if name in stored and name not in skip and stored[name] != print_]


def promotion_contradictions(states: Iterable[Mapping[str, Any]], primary: str, reseed: bool = False) -> list[str]:
    """What the inventory says against what playbooks/promote.yml left on the database servers: `states` are the
    results of slurping each one's replication state file (item = its inventory name; content, base64 JSON
    {"role": "primary" | "fenced", "at": epoch seconds}, absent where there is none or the host did not answer),
    `primary` the host the inventory names the primary, `reseed` whether this run re-seeds the replicas.

    The last server promoted must be that primary, and a fenced one must not be. One promoted before it (a primary
    again once, lost again since) holds data of its own: only a run that re-seeds it as a replica may touch it."""
    found = []
    records = []
    for state in states:
        if state.get("content"):
            record = yaml.safe_load(base64.b64decode(state["content"]).decode("utf-8"))
            records.append((float(record.get("at") or 0), str(state["item"]), record.get("role")))
    promoted = sorted((at, host) for at, host, role in records if role == "primary")
    if len(promoted) > 1 and promoted[-1][0] == promoted[-2][0]:
        return [f"{' and '.join(host for _, host in promoted)} were each promoted to primary and their records do not "
                "say which was last: remove the record (mysql_replication_state_path) of those that are not the "
                "primary"]
    for at, host, role in records:
        if role == "primary" and (at, host) == promoted[-1] and host != primary:
            found.append(f"{host} was promoted to primary, but the inventory names {primary}")
        elif role == "primary" and host != primary and not reseed:
            found.append(f"{host} was promoted to primary before {promoted[-1][1]} was: it holds data of its own, "
                         "list it as a replica and run once with -e mysql_replication_reseed=true")
        elif role == "fenced" and host == primary:
            found.append(f"{host} was fenced (replaced as the primary), but the inventory still names it the primary")
    return found


def secret_selection(value: Any, names: Iterable[str]) -> list[str]:
    """Which of `names` an operator's setting selects: true/"true"/"all" = every one, false/""/None = none, a list
    or a comma-separated string = those (an unknown name is an error that lists the known ones)."""
    known = list(names)
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false")):
        return []
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "all")):
        return known
    chosen = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n) for n in value]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"unknown secret(s) {unknown}: the secrets are {known}")
    return [n for n in known if n in chosen]


def ssh_peers(hosts: Iterable[str], hostvars: Mapping[str, Any], port: int = 22) -> list[dict[str, Any]]:
    """Per host: where its sshd answers and its ed25519 host key (from its facts), for a known_hosts file.

    A host without the key in its facts (unreachable in this run) gets host_key "": the certbot role then keeps
    the key it trusted before, so one dead peer neither breaks the run nor loses its trust.
    """
    peers = []
    for host in hosts:
        key = hostvars[host].get("ansible_ssh_host_key_ed25519_public")
        peers.append({"address": str(hostvars[host]["webstack_address"]), "port": int(port),
                      "host_key": f"ssh-ed25519 {key}" if key else ""})
    return peers


class FilterModule:
    """webstack filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "webstack_dns_records": dns_records,
            "webstack_zone_lines": zone_lines,
            "webstack_group_roles": group_roles,
            "webstack_drain_commands": drain_commands,
            "webstack_upstream_drain_commands": upstream_drain_commands,
            "webstack_secret_fingerprints": secret_fingerprints,
            "webstack_changed_secrets": changed_secrets,
            "webstack_secret_selection": secret_selection,
            "webstack_ssh_peers": ssh_peers,
            "webstack_promotion_contradictions": promotion_contradictions,
        }
