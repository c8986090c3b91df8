"""Stage 2 "secured": the firewall follows the roles' declared flows, seen from the other hosts and the controller."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra.utils.ansible_runner
import webstack_probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
ROOT = Path(__file__).resolve().parents[3]
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"

DB, APP, LB = "webstack-mfw-db-01", "webstack-mfw-app-01", "webstack-mfw-lb-01"
ALL = [DB, APP, LB]
testinfra_hosts = [DB]

# A filtered port drops the SYN: the connect times out. A closed-but-unfiltered port answers RST at once
# ("refused"), which would prove nothing about the firewall.
FILTER_TIMEOUT = 2.0
CONNECT = """
import socket, sys, time
s = socket.socket(); s.settimeout(float(sys.argv[3])); t = time.monotonic()
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); r = "open"
except socket.timeout:
    r = "timeout"
except ConnectionRefusedError:
    r = "refused"
except OSError as e:
    r = "error:" + type(e).__name__
print(r, round(time.monotonic() - t, 3))
"""


@functools.cache
def node(name: str) -> Any:
    """The host as the verifier sees it: logged in as the admin account, commands through sudo."""
    import testinfra

    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}&sudo=true")


def address(name: str) -> str:
    return str(RUNNER.get_variables(name)["ansible_host"])


def connect_from(name: str, target: str, port: int, timeout: float = FILTER_TIMEOUT) -> tuple[str, float]:
    out = node(name).check_output(f"python3 -c '{CONNECT}' {address(target)} {port} {timeout}")
    result, seconds = out.split()
    return result, float(seconds)


def connect_from_controller(target: str, port: int, timeout: float = FILTER_TIMEOUT) -> tuple[str, float]:
    start = time.monotonic()
    try:
        with socket.create_connection((address(target), port), timeout=timeout):
            result = "open"
    except TimeoutError:
        result = "timeout"
    except ConnectionRefusedError:
        result = "refused"
    return result, time.monotonic() - start


def assert_filtered(probe: tuple[str, float], what: str) -> None:
    result, seconds = probe
    assert result == "timeout", f"{what}: {result} after {seconds:.2f} s (refused = closed, not filtered)"
    assert seconds >= FILTER_TIMEOUT * 0.9, f"{what}: gave up after {seconds:.2f} s"


def converge(*extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, int]]]:
    """Run the scenario's converge over SSH (the molecule inventory directory) and parse PLAY RECAP."""
    return webstack_probe.run_playbook(CONVERGE, str(Path(INVENTORY).parent), *extra)


def ssh(target: str, *options: str, command: str = "hostname") -> subprocess.CompletedProcess[str]:
    key = RUNNER.get_variables(target)["ansible_ssh_private_key_file"]
    return subprocess.run(["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                           "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                           *options, f"debian@{address(target)}", command],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("name", ALL)
def test_firewall_is_active_and_denies_by_default(name: str) -> None:
    status = node(name).check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing)" in status
    assert "Logging: on (low)" in status


def test_rules_live_in_the_nft_backend_only(host: Any) -> None:
    assert "nf_tables" in host.check_output("iptables -V")
    nft_rules = host.check_output("iptables-nft -S ufw-user-input")
    assert f"-A ufw-user-input -s {address(APP)}/32 -p tcp -m tcp --dport 3306 -j ACCEPT" in nft_rules
    assert "ufw" not in host.check_output("iptables-legacy -S 2>/dev/null || true")


def test_app_server_reaches_the_database() -> None:
    result, seconds = connect_from(APP, DB, 3306)
    assert result == "open", (result, seconds)
    assert seconds < 1.0


def test_database_is_filtered_from_the_load_balancer_and_the_controller() -> None:
    assert_filtered(connect_from(LB, DB, 3306), "lb-01 -> db-01:3306")
    assert_filtered(connect_from_controller(DB, 3306), "controller -> db-01:3306")


def test_undeclared_port_is_filtered_from_everyone(host: Any) -> None:
    # Something does listen there: only the firewall keeps the others out.
    assert host.socket("tcp://0.0.0.0:8081").is_listening
    assert host.check_output(f"python3 -c '{CONNECT}' 127.0.0.1 8081 2").startswith("open")
    for name in (APP, LB):
        assert_filtered(connect_from(name, DB, 8081), f"{name} -> db-01:8081")
    assert_filtered(connect_from_controller(DB, 8081), "controller -> db-01:8081")


def test_public_port_of_the_load_balancer_answers_everyone() -> None:
    assert connect_from(APP, LB, 80)[0] == "open"
    assert connect_from(DB, LB, 80)[0] == "open"
    assert connect_from_controller(LB, 80)[0] == "open"


@pytest.mark.parametrize("name", ALL)
def test_ssh_answers_the_admin_network(name: str) -> None:
    with socket.create_connection((address(name), 22), timeout=5) as conn:
        conn.settimeout(5)
        assert conn.recv(64).startswith(b"SSH-2.0-")


def test_ssh_is_filtered_from_other_hosts() -> None:
    assert_filtered(connect_from(APP, DB, 22), "app-01 -> db-01:22")


def test_key_login_works_and_passwords_are_never_offered() -> None:
    login = ssh(DB)
    assert login.returncode == 0 and login.stdout.strip() == "db-01", login.stderr
    password = ssh(DB, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255
    assert "Permission denied (publickey)" in password.stderr, password.stderr


@pytest.mark.parametrize("name", ALL)
def test_effective_sshd_config_is_hardened(name: str) -> None:
    # The prepare step dropped in PasswordAuthentication yes (as cloud images do): the hardening must win.
    assert node(name).file("/etc/ssh/sshd_config.d/50-cloud-init.conf").contains("PasswordAuthentication yes")
    effective = set(node(name).check_output("sshd -T").splitlines())
    assert {"passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin without-password",
            "allowusers debian", "authenticationmethods publickey", "x11forwarding no",
            "allowtcpforwarding local"} <= effective


def test_an_admin_can_open_a_local_tunnel_but_no_remote_one() -> None:
    """What the docs promise for the monitoring UIs: ssh -L to a port only the host itself can reach."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    key = RUNNER.get_variables(DB)["ansible_ssh_private_key_file"]
    tunnel = subprocess.Popen(["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", "-o", "ExitOnForwardFailure=yes", "-N",
                               "-L", f"127.0.0.1:{port}:127.0.0.1:22", f"debian@{address(DB)}"],
                              # Never the test's own stdin: ssh makes it non-blocking, which later ansible runs refuse.
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def banner() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                return conn.recv(64)
        assert webstack_probe.wait_for(lambda: banner().startswith(b"SSH-2.0-"), timeout=15)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
    remote = ssh(DB, "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:22", command="true")
    assert remote.returncode != 0, remote.stderr


def test_check_mode_reports_no_changes() -> None:
    result, recap = converge("--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap


def test_stale_rules_are_removed_and_the_next_run_changes_nothing(host: Any) -> None:
    # An older inventory let the load balancer reach the database and opened 8081 to all.
    host.check_output(f"ufw allow from {address(LB)} to any port 3306 proto tcp comment 'stale'")
    host.check_output("ufw allow 8081/tcp")
    assert connect_from(LB, DB, 3306)[0] == "open"

    result, recap = converge()
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap[DB]["changed"] > 0 and recap[APP]["changed"] == 0 and recap[LB]["changed"] == 0, recap
    added = host.check_output("ufw show added")
    assert "8081" not in added and address(LB) not in added
    assert_filtered(connect_from(LB, DB, 3306), "lb-01 -> db-01:3306 after the stale rule went")
    assert_filtered(connect_from(APP, DB, 8081), "app-01 -> db-01:8081 after the stale rule went")
    assert connect_from(APP, DB, 3306)[0] == "open"

    result, recap = converge()
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap


@pytest.mark.parametrize(("extra", "message"), [
    ({"ufw_ssh_sources": ["192.0.2.0/24"]}, "would not allow that connection"),
    ({"sshd_allow_users": ["deploy"]}, "Add debian to sshd_allow_users"),
])
def test_refuses_to_lock_out_the_controller(host: Any, extra: dict[str, Any], message: str) -> None:
    before = host.check_output("ufw show added")
    result, recap = converge("--limit", DB, "-e", json.dumps(extra))
    assert result.returncode != 0
    assert message in " ".join((result.stdout + result.stderr).split()), result.stdout[-3000:] + result.stderr
    assert recap[DB]["failed"] == 1 and recap[DB]["changed"] == 0, recap
    assert host.check_output("ufw show added") == before
    assert ssh(DB).returncode == 0
