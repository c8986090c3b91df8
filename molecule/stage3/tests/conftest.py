"""Make the shared verifier helpers importable; the fixtures every stage 3 test module shares."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "integration"))

import webstack_probe as probe  # noqa: E402  (importable once the path above is set)


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pebble's issuing root, from its management API (trusted only inside these tests)."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    path.write_bytes(probe.pebble_root("webstack-m3-pebble", ephemeral / "pebble-listener-ca.pem"))
    return str(path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "beside_others: times nothing; may run while other scenarios use the CPU")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked beside_others first (otherwise in file order): under make test they run while the other
    scenarios still use the CPU, and the failover tests, which wait until those have ended, come after them."""
    items.sort(key=lambda item: item.get_closest_marker("beside_others") is None)


@pytest.fixture(autouse=True)
def alone(request: pytest.FixtureRequest) -> None:
    """Every stage 3 test but those marked beside_others waits until the scenarios running beside this one have
    ended (make test: stage3's converge overlaps stage 1's last tests); VRRP and failover timings need the CPU."""
    if request.node.get_closest_marker("beside_others") is None:
        probe.wait_alone()
