"""Make the shared verifier helpers importable; the load balancer's address and the ACME root to trust it with."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "integration"))

import webstack_probe as probe  # noqa: E402


@pytest.fixture(scope="session")
def lb() -> str:
    """Address of the load balancer (the site's entry)."""
    runner = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
    return probe.container_address(runner.get_hosts("loadbalancers")[0])


@pytest.fixture(scope="session")
def pebble_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pebble's issuing root, fetched from its management API (trusted only inside this test run)."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_bytes(probe.pebble_root("webstack-m2-pebble",
                                       Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pebble-listener-ca.pem"))
    return str(path)
