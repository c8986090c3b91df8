#!/usr/bin/env python3
"""Local lab: one systemd container per inventory host of a stage, reached over SSH like real hosts.

    python tools/lab.py up 0      containers + converge + smoke check
    python tools/lab.py down 0    remove the stage's containers and network
    python tools/lab.py smoke 0   only the smoke check
    python tools/lab.py play 1 playbooks/deploy.yml [ansible-playbook arguments]
                                  a playbook against the running lab (its inventory, secrets and facts)

Containers are named webstack-s<N>-<host> and sit on the network webstack-s<N> (10.250.<N>.0/24). Like a
cloud image's first boot, each gets an admin account (`debian`, passwordless sudo) holding the generated lab key;
Ansible logs in as that account and uses `become`, as on real hosts (root has no key).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "lab"
PREFIX = "webstack"
SITE_NAME = "www.foobar.com"
# The account Ansible logs in as (Debian's cloud images call it debian); root is reached with sudo.
ADMIN_USER = "debian"
# What cloud-init does for the image's default user: the account, its key, passwordless sudo. Idempotent.
ADMIN_SCRIPT = """set -eu
id -u "$1" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo "$1"
install -d -m 0700 -o "$1" -g "$1" "/home/$1/.ssh"
install -m 0600 -o "$1" -g "$1" /etc/webstack-lab/authorized_keys "/home/$1/.ssh/authorized_keys"
printf '%s ALL=(ALL) NOPASSWD:ALL\\n' "$1" > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
"""
HOSTS_MAX = 32  # fixed host addresses .64-.95: below any virtual IP of the stages (.100)
ENTRY_ALIASES = ("www.foobar.com", "foobar.com")
SYSTEMD_CONTAINER = Path(__file__).resolve().parent / "systemd-container.yml"


def systemd_flags(definition: Mapping[str, Any]) -> list[str]:
    """`docker run` flags from the one systemd container definition (tools/systemd-container.yml); the command
    (systemd) goes after the image."""
    flags = [arg for cap in definition["capabilities"] for arg in ("--cap-add", cap)]
    flags += [arg for opt in definition["security_opts"] for arg in ("--security-opt", opt)]
    flags += [arg for path in definition["tmpfs"] for arg in ("--tmpfs", path)]
    flags += [arg for volume in definition["volumes"] for arg in ("-v", volume)]
    flags += [f"--cgroupns={definition['cgroupns_mode']}", "--stop-signal", definition["stop_signal"]]
    return flags


SYSTEMD = yaml.safe_load(SYSTEMD_CONTAINER.read_text(encoding="utf-8"))["webstack_systemd_container"]
SYSTEMD_FLAGS = systemd_flags(SYSTEMD)


@dataclass(frozen=True)
class LabHost:
    """One inventory host and the container that plays it."""

    name: str
    groups: tuple[str, ...]
    stage: int

    @property
    def container(self) -> str:
        return container_name(self.stage, self.name)


def container_name(stage: int, host: str) -> str:
    return f"{PREFIX}-s{stage}-{host}"


def network_name(stage: int) -> str:
    return f"{PREFIX}-s{stage}"


def subnet(stage: int) -> str:
    if not 0 <= stage <= 9:
        raise ValueError(f"stage must be 0..9, got {stage}")
    return f"10.250.{stage}.0/24"


def container_range(stage: int) -> str:
    """The part of the subnet docker hands out (.0-.63): a virtual IP above it is never given to a container."""
    return f"10.250.{stage}.0/26"


def host_address(stage: int, index: int) -> str:
    """The fixed address of the index-th host (inventory order), above the range docker hands out: a host killed
    and started again comes back at the same address, whatever else was started meanwhile."""
    if not 0 <= index < HOSTS_MAX:
        raise ValueError(f"the lab holds at most {HOSTS_MAX} hosts per stage (host number {index + 1})")
    return f"10.250.{stage}.{64 + index}"


def inventory_vip(document: dict[str, Any]) -> str:
    """The stage's virtual IP (webstack_vip) from `ansible-inventory --list` output, "" when it has none."""
    for variables in (document.get("_meta", {}).get("hostvars") or {}).values():
        if variables.get("webstack_vip"):
            return str(variables["webstack_vip"])
    return ""


def parse_inventory(document: dict[str, Any], stage: int) -> list[LabHost]:
    """Hosts and their groups from `ansible-inventory --list` output, in inventory order."""
    membership: dict[str, list[str]] = {}
    for group, body in document.items():
        if group in ("_meta", "all", "ungrouped") or not isinstance(body, dict):
            continue
        for host in body.get("hosts", []):
            membership.setdefault(host, []).append(group)
    return [LabHost(name=h, groups=tuple(sorted(g)), stage=stage) for h, g in membership.items()]


def entry_host(hosts: list[LabHost]) -> LabHost:
    """The host that receives the site's traffic: the first load balancer, else the first web server."""
    for group in ("loadbalancers", "webservers"):
        for host in hosts:
            if group in host.groups:
                return host
    raise ValueError("inventory has neither loadbalancers nor webservers")


def run_args(host: LabHost, image: str, pubkey: Path, entry: bool, address: str = "") -> list[str]:
    """The docker run command line for one host (at `address`, else one docker picks)."""
    args = ["docker", "run", "-d", "--name", host.container, "--hostname", host.name,
            "--network", network_name(host.stage), *(["--ip", address] if address else []),
            "--label", f"{PREFIX}.stage={host.stage}",
            *SYSTEMD_FLAGS, "-v", f"{pubkey}:/etc/webstack-lab/authorized_keys:ro"]
    if "loadbalancers" in host.groups:
        args += ["--sysctl", "net.ipv4.ip_nonlocal_bind=1"]
    if entry:
        for alias in ENTRY_ALIASES:
            args += ["--network-alias", alias]
    return [*args, image, SYSTEMD["command"]]


def lab_vars(stage: int) -> dict[str, Any]:
    """Lab-only settings: the controller (the network's gateway) is exempt from the per-client rate limit, so
    `make bench` measures throughput, not the limit; from stage 2 on certificates come from the lab's own
    pebble CA, never a public one, and alerts are read in Alertmanager's API instead of paging anyone."""
    gateway = str(next(ipaddress.ip_network(subnet(stage)).hosts()))
    settings: dict[str, Any] = {"webstack_rate_limit_exempt": [f"{gateway}/32"]}
    if stage >= 2:
        settings |= {"certbot_acme_directory": "https://pebble:14000/dir",
                     "certbot_ca_bundle": "/etc/webstack/pebble-listener-ca.pem",
                     "certbot_email": "lab@foobar.com",
                     "webstack_require_alert_receiver": False}
    return settings


def overlay_inventory(addresses: dict[str, str], key: Path, known_hosts: Path,
                      lab_vars: dict[str, Any] | None = None) -> dict[str, Any]:
    """Connection details of the lab containers (and lab-only settings), layered over the stage inventory.

    Host keys are checked like on real hosts, against the lab's own known_hosts file (recorded at start).
    """
    return {
        "all": {
            "vars": dict(lab_vars or {}),
            "hosts": {
                name: {
                    "ansible_host": address,
                    "ansible_user": ADMIN_USER,
                    "ansible_ssh_private_key_file": str(key),
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                               "-o LogLevel=ERROR",
                }
                for name, address in addresses.items()
            }
        }
    }


def known_hosts_lines(scans: dict[str, str]) -> list[str]:
    """known_hosts entries from `ssh-keyscan` output per address, comments and blanks dropped, sorted."""
    lines = {line.strip() for out in scans.values() for line in out.splitlines()}
    return sorted(line for line in lines if line and not line.startswith("#"))


def stage_env(stage: int) -> dict[str, str]:
    """A stage lab's own generated secrets and fact cache (the stages' host names are the same: lb-01, ...)."""
    return {"WEBSTACK_SECRETS_DIR": str(BUILD / f"stage{stage}" / "secrets"),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(BUILD / f"stage{stage}" / "facts")}


def linear_env(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` running plain Ansible: its own linear strategy, no mitogen plugin path."""
    env = {k: v for k, v in environ.items() if k != "ANSIBLE_STRATEGY_PLUGINS"}
    env["ANSIBLE_STRATEGY"] = "linear"
    return env


def mitogen_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """mitogen's linear strategy, on unless WEBSTACK_MITOGEN=0 (measured ~1.4-2x faster; plain Ansible stays tested)."""
    if (environ if environ is not None else os.environ).get("WEBSTACK_MITOGEN", "1") == "0":
        return {"ANSIBLE_STRATEGY": "linear"}
    import ansible_mitogen

    strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear"}


def sh(args: list[str], check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, text=True, capture_output=capture)


def exists(kind: str, name: str) -> bool:
    return sh(["docker", kind, "inspect", name], check=False, capture=True).returncode == 0


def inventory_document(stage: int) -> dict[str, Any]:
    inventory = ROOT / "inventories" / f"stage{stage}"
    if not inventory.is_dir():
        raise SystemExit(f"lab: no inventory {inventory}")
    return dict(json.loads(sh(["ansible-inventory", "-i", str(inventory), "--list"], capture=True).stdout))


def load_hosts(stage: int) -> list[LabHost]:
    return parse_inventory(inventory_document(stage), stage)


def entry_address(stage: int) -> str:
    """Where the lab resolves www.foobar.com: the stage's virtual IP, else the entry host's container."""
    document = inventory_document(stage)
    return inventory_vip(document) or container_address(stage, entry_host(parse_inventory(document, stage)).name)


def ensure_key() -> Path:
    key = BUILD / "id_ed25519"
    if not key.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "webstack-lab", "-f", str(key)])
    return key


def container_address(stage: int, host: str) -> str:
    out = sh(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container_name(stage, host)],
             capture=True).stdout
    return str(json.loads(out)[network_name(stage)]["IPAddress"])


def record_host_keys(addresses: dict[str, str], path: Path) -> None:
    """Write the containers' SSH host keys (ed25519) to the lab's known_hosts file."""
    scans = {a: sh(["ssh-keyscan", "-T", "5", "-t", "ed25519", a], capture=True).stdout for a in addresses.values()}
    lines = known_hosts_lines(scans)
    if len(lines) < len(addresses):
        raise SystemExit(f"lab: ssh-keyscan returned {len(lines)} host key(s) for {len(addresses)} host(s)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def wait_for_ssh(address: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"lab: no SSH on {address} after {timeout:.0f} s")


def up(stage: int, release: str, converge: bool) -> None:
    sh([str(ROOT / "tools" / "ensure-docker.sh")])
    image = sh([str(ROOT / "tools" / "build-image.sh"), release], capture=True).stdout.strip().splitlines()[-1]
    key = ensure_key()
    document = inventory_document(stage)
    hosts = parse_inventory(document, stage)
    entry = entry_host(hosts)
    # With a virtual IP, the site's name resolves to it (for pebble too), not to one container.
    vip = inventory_vip(document)
    if not exists("network", network_name(stage)):
        sh(["docker", "network", "create", "--subnet", subnet(stage), "--ip-range", container_range(stage),
            "--label", f"{PREFIX}.stage={stage}", network_name(stage)], capture=True)
    for index, host in enumerate(hosts):
        if not exists("container", host.container):
            sh(run_args(host, image, key.with_suffix(".pub"), host == entry and not vip, host_address(stage, index)),
               capture=True)
        else:
            sh(["docker", "start", host.container], capture=True)
    for host in hosts:
        sh(["docker", "exec", host.container, "sh", "-c", ADMIN_SCRIPT, "admin-account", ADMIN_USER], capture=True)
    addresses = {h.name: container_address(stage, h.name) for h in hosts}
    for address in addresses.values():
        wait_for_ssh(address)
    overlay = BUILD / f"stage{stage}" / "lab.yml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    known_hosts = overlay.parent / "known_hosts"
    record_host_keys(addresses, known_hosts)
    overlay.write_text(json.dumps(overlay_inventory(addresses, key, known_hosts, lab_vars(stage)), indent=2)
                       + "\n", encoding="utf-8")
    print(f"lab: {len(hosts)} container(s) on {network_name(stage)}: "
          + ", ".join(f"{h}={a}" for h, a in addresses.items()))
    env = dict(os.environ, **stage_env(stage), **mitogen_env())
    inventory = ["-i", str(ROOT / "inventories" / f"stage{stage}"), "-i", str(overlay)]
    if stage >= 2:
        pebble_vars = {"pebble_container": container_name(stage, "pebble"), "pebble_network": network_name(stage),
                       "pebble_image": image, "pebble_labels": {f"{PREFIX}.stage": str(stage)},
                       "pebble_ca_out": str(BUILD / f"stage{stage}" / "pebble-listener-ca.pem"),
                       "pebble_etc_hosts": {name: vip for name in ENTRY_ALIASES} if vip else {}}
        cmd = ["ansible-playbook", str(ROOT / "tools" / "pebble.yml"), *inventory, "-e", json.dumps(pebble_vars)]
        if subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0:
            raise SystemExit("lab: the lab's ACME CA (pebble) did not start")
    if converge:
        cmd = ["ansible-playbook", str(ROOT / "site.yml"), *inventory]
        if subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0:
            raise SystemExit("lab: converge failed")
        smoke(stage, vip or addresses[entry.name])


def pebble_root(stage: int) -> Path:
    """Fetch the lab CA's issuing root (trusted only by the smoke check)."""
    listener = ssl.create_default_context(cafile=str(BUILD / f"stage{stage}" / "pebble-listener-ca.pem"))
    listener.check_hostname = False
    conn = http.client.HTTPSConnection(container_address(stage, "pebble"), 15000, context=listener, timeout=10)
    try:
        conn.request("GET", "/roots/0")
        root = conn.getresponse().read()
    finally:
        conn.close()
    path = BUILD / f"stage{stage}" / "pebble-root.pem"
    path.write_bytes(root)
    return path


def fetch(address: str, path: str, port: int = 80,
          cafile: Path | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    conn: http.client.HTTPConnection
    if cafile is not None:
        context = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection(address, port, timeout=10, context=context)
        # Verify the certificate for the site's name while connecting to the lab address.
        conn.sock = context.wrap_socket(socket.create_connection((address, port), timeout=10),
                                        server_hostname=SITE_NAME)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": SITE_NAME})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def smoke(stage: int, address: str | None = None) -> None:
    if address is None:
        address = entry_address(stage)
    if stage >= 2:
        root = pebble_root(stage)
        status, headers, body = fetch(address, "/", port=443, cafile=root)
        print(f"\nsmoke check: https://{SITE_NAME}/ (resolved to {address} in the lab; chain verified against "
              f"the lab CA's root {root})")
    else:
        status, headers, body = fetch(address, "/")
        print(f"\nsmoke check: http://{SITE_NAME}/ (resolved to {address} in the lab)")
    print(f"HTTP {status}")
    for name, value in headers:
        print(f"{name}: {value}")
    print()
    for line in body.decode("utf-8", "replace").splitlines()[:14]:
        print(line)
    if status != 200 or b'id="items"' not in body:
        raise SystemExit("lab: smoke check failed: no DB-backed page")


def down(stage: int) -> None:
    sh([str(ROOT / "tools" / "ensure-docker.sh")])
    names = sh(["docker", "ps", "-aq", "--filter", f"label={PREFIX}.stage={stage}"], capture=True).stdout.split()
    if names:
        sh(["docker", "rm", "-f", *names], capture=True)
    if exists("network", network_name(stage)):
        sh(["docker", "network", "rm", network_name(stage)], capture=True)
    shutil.rmtree(BUILD / f"stage{stage}" / "facts", ignore_errors=True)  # the next lab's hosts are new
    print(f"lab: removed {len(names)} container(s) and the network of stage {stage}")


def play(stage: int, playbook: str, extra: list[str]) -> int:
    """Run a playbook against the running lab of `stage`, as its converge does (exit status of ansible-playbook)."""
    overlay = BUILD / f"stage{stage}" / "lab.yml"
    if not overlay.exists():
        raise SystemExit(f"lab: no lab of stage {stage} here ({overlay} is missing): make lab STAGE={stage} first")
    env = dict(os.environ, **stage_env(stage), **mitogen_env())
    cmd = ["ansible-playbook", str(ROOT / playbook), "-i", str(ROOT / "inventories" / f"stage{stage}"),
           "-i", str(overlay), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "smoke", "create", "play"])
    parser.add_argument("stage", type=int, choices=range(4))
    parser.add_argument("playbook", nargs="?", help="play: the playbook, relative to the repository")
    parser.add_argument("--release", default=os.environ.get("WEBSTACK_DEBIAN", "bookworm"),
                        choices=["bookworm", "trixie"])
    args, extra = parser.parse_known_args(argv)
    if args.action == "play":
        if not args.playbook:
            parser.error("play needs a playbook")
        return play(args.stage, args.playbook, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.action in ("up", "create"):
        up(args.stage, args.release, converge=args.action == "up")
    elif args.action == "down":
        down(args.stage)
    else:
        smoke(args.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
