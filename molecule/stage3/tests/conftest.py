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
