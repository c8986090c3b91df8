"""Stage 2 firewalls, probed over the network: allowed flows answer, everything else is filtered."""

from __future__ import annotations

import os
from typing import Any

import pytest
import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
LB = RUNNER.get_hosts("loadbalancers")[0]
PRIMARY = RUNNER.get_hosts("db_primary")[0]
REPLICA = RUNNER.get_hosts("db_replicas")[0]
MON = RUNNER.get_hosts("monitoring")[0]
ALL = RUNNER.get_hosts("all")
PROBE = "webstack-m2-probe"
# Every port any role of the stage could open, plus a few nobody should.
PORTS = [22, 80, 443, 3306, 6379, 8000, 8080, 8404, 8888, 9090, 9093, 9100, 9104, 9113, 9121, 9999]
# What an outsider (the probe: in no group) may reach: SSH (admin network: any) and the site on the LB.
OPEN_TO_ANYONE = {(LB, 80), (LB, 443)} | {(host, 22) for host in ALL}

testinfra_hosts = [PRIMARY]


@pytest.fixture(scope="module")
def addresses() -> dict[str, str]:
    return {host: probe.container_address(host) for host in ALL}


def test_ufw_is_active_with_default_deny(host: Any) -> None:
    for name in ALL:
        status = probe.node(name).check_output("ufw status verbose")
        assert "Status: active" in status and "deny (incoming)" in status, (name, status)


def test_outsider_reaches_only_ssh_and_the_site(addresses: dict[str, str]) -> None:
    targets = [(addresses[h], p) for h in ALL for p in PORTS]
    result = probe.scan(PROBE, targets)
    for host in ALL:
        for port in PORTS:
            state = result[f"{addresses[host]}:{port}"]
            if (host, port) in OPEN_TO_ANYONE:
                assert state == "open", (host, port, state)
            else:
                # Filtered, not merely closed: no RST comes back.
                assert state == "filtered", (host, port, state)


def test_database_refuses_the_lb_and_accepts_an_app_host(addresses: dict[str, str]) -> None:
    target = [(addresses[PRIMARY], 3306)]
    assert probe.scan(LB, target)[f"{addresses[PRIMARY]}:3306"] == "filtered"
    assert probe.scan(REPLICA, target)[f"{addresses[PRIMARY]}:3306"] == "open"


def test_web_port_only_from_the_load_balancer(addresses: dict[str, str]) -> None:
    target = [(addresses[PRIMARY], 80)]
    assert probe.scan(LB, target)[f"{addresses[PRIMARY]}:80"] == "open"
    assert probe.scan(MON, target)[f"{addresses[PRIMARY]}:80"] == "filtered"


def test_exporters_only_from_the_monitoring_host(addresses: dict[str, str]) -> None:
    target = [(addresses[REPLICA], 9100)]
    assert probe.scan(MON, target)[f"{addresses[REPLICA]}:9100"] == "open"
    assert probe.scan(LB, target)[f"{addresses[REPLICA]}:9100"] == "filtered"


def test_sshd_is_hardened(host: Any) -> None:
    effective = host.check_output("sshd -T")
    assert "passwordauthentication no" in effective
    assert "permitrootlogin without-password" in effective or "permitrootlogin prohibit-password" in effective
