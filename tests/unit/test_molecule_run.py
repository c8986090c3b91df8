"""The Molecule runner's pure parts: scenario names and the timing summary."""

from __future__ import annotations

import molecule_run
import pytest


def test_pairs_name_a_scenario_and_a_debian_release() -> None:
    assert molecule_run.parse_pair("stage1:trixie") == ("stage1", "trixie")
    assert molecule_run.parse_pair("stage0") == ("stage0", "bookworm")
    with pytest.raises(ValueError, match="focal"):
        molecule_run.parse_pair("stage0:focal")


def test_summary_has_a_row_per_scenario_and_the_total() -> None:
    ok = molecule_run.Result("stage0", "bookworm", {"create": 10.0, "converge": 40.0, "destroy": 5.0})
    bad = molecule_run.Result("stage1", "trixie", {"create": 12.0, "converge": 3.0, "destroy": 4.0}, "converge")
    table = molecule_run.summary([ok, bad]).splitlines()
    assert table[2].startswith("stage0:bookworm") and table[2].endswith("55s  passed")
    assert table[3].endswith("FAILED in converge") and "19s" in table[3]
    assert table[-1].startswith("all scenarios") and table[-1].endswith("74s")


def test_a_comma_joins_scenarios_that_run_at_the_same_time() -> None:
    assert molecule_run.parse_group("stage0:bookworm,firewall") == [("stage0", "bookworm"), ("firewall", "bookworm")]
    assert molecule_run.parse_group("stage3") == [("stage3", "bookworm")]
    with pytest.raises(ValueError, match="focal"):
        molecule_run.parse_group("stage0,firewall:focal")


def test_each_scenario_has_its_own_secrets() -> None:
    assert molecule_run.secrets_dir("stage1", {"WEBSTACK_SECRETS_DIR": "/x/secrets"}) == "/x/secrets/stage1"
    assert molecule_run.secrets_dir("stage0", {}).endswith("build/secrets/stage0")
