"""The Molecule runner's pure parts: scenario names and the timing summary."""

from __future__ import annotations

import re
import time
from pathlib import Path

import molecule_run
import pytest
import webstack_probe as probe
import yaml


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
    planned = molecule_run.Planned
    assert molecule_run.parse_group("stage0:bookworm,firewall") == [planned("stage0", "bookworm"),
                                                                     planned("firewall", "bookworm")]
    assert molecule_run.parse_group("stage3") == [planned("stage3", "bookworm")]
    with pytest.raises(ValueError, match="focal"):
        molecule_run.parse_group("stage0,firewall:focal")


def test_a_scenario_can_start_once_another_of_its_group_reaches_a_phase() -> None:
    group = molecule_run.parse_group("stage1:bookworm,stage2:trixie@stage1.verify")
    assert group[1] == molecule_run.Planned("stage2", "trixie", ("stage1", "verify"))
    assert molecule_run.parse_group("stage1,stage2@stage1.ended")[1].after == ("stage1", "ended")
    bad_groups = [("stage1,stage2@stage1.lint", "bad start condition"), ("stage1,stage2@stage1", "bad start"),
                  ("stage1,stage2@stage3.verify", "not another scenario"), ("stage1@stage1.verify", "not another")]
    for bad, message in bad_groups:
        with pytest.raises(ValueError, match=message):
            molecule_run.parse_group(bad)


def test_a_group_that_could_never_start_is_refused() -> None:
    with pytest.raises(ValueError, match="circle: stage1 -> stage2 -> stage1"):
        molecule_run.parse_group("stage1@stage2.ended,stage2@stage1.verify")
    with pytest.raises(ValueError, match="circle: stage2 -> roles -> stage3 -> stage2"):
        molecule_run.parse_group("stage2@roles.create,stage3@stage2.verify,roles@stage3.ended")
    with pytest.raises(ValueError, match="roles waits for /solo stage3 to end"):
        molecule_run.parse_group("stage1,stage3@stage1.verify/solo,roles@stage3.ended")
    assert molecule_run.parse_group("stage1,stage3@stage1.verify/solo,roles@stage3.verify")[2].after == (
        "stage3", "verify")
    with pytest.raises(SystemExit) as exited:  # before any scenario starts
        molecule_run.main(["stage1@stage2.ended,stage2@stage1.verify"])
    assert exited.value.code == 2


def test_the_phase_board_releases_a_waiter_when_the_phase_starts_or_the_scenario_ends() -> None:
    board = molecule_run.PhaseBoard(["stage1", "stage2"])
    assert not board.events[("stage1", "verify")].is_set()
    board.started("stage1", "converge")
    assert board.events[("stage1", "converge")].is_set() and not board.events[("stage1", "verify")].is_set()
    board.ended("stage1")  # a scenario that failed early never verifies: its waiters go on
    board.wait("stage1", "verify")
    assert not board.events[("stage2", "create")].is_set()


def test_each_scenario_has_its_own_secrets() -> None:
    assert molecule_run.secrets_dir("stage1", {"WEBSTACK_SECRETS_DIR": "/x/secrets"}) == "/x/secrets/stage1"
    assert molecule_run.secrets_dir("stage0", {}).endswith("build/secrets/stage0")


def test_a_scenarios_containers_are_named_after_its_networks() -> None:
    names = ["webstack-m1-lb-01", "webstack-m1-web-01", "webstack-m10-x", "webstack-lab1-lb-01", "webstack-m3-pebble"]
    assert molecule_run.owned(names, ["webstack-m1"]) == ["webstack-m1-lb-01", "webstack-m1-web-01"]
    assert molecule_run.owned(names, ["webstack-m3"]) == ["webstack-m3-pebble"]


@pytest.mark.parametrize("scenario", ["stage0", "stage1", "stage2", "stage3", "firewall", "keepalived", "monitoring"])
def test_every_scenario_names_its_containers_after_its_networks(scenario: str) -> None:
    networks = molecule_run.scenario_networks(scenario)
    document = yaml.safe_load((molecule_run.ROOT / "molecule" / scenario / "molecule.yml").read_text())
    platforms = [platform["name"] for platform in document["platforms"]]
    assert networks and molecule_run.owned(platforms, networks) == sorted(platforms)


def test_a_scenario_runs_the_tested_phases_of_its_test_sequence() -> None:
    assert molecule_run.scenario_phases("stage1") == ["destroy", "create", "converge", "idempotence", "verify"]
    assert molecule_run.scenario_phases("stage3") == ["destroy", "create", "converge", "verify"]


def test_a_listing_shows_whether_an_instance_was_created() -> None:
    assert not molecule_run.created_in("webstack-m0-web-01      docker  ansible stage0  false   false\n")
    assert molecule_run.created_in("webstack-m1-lb-01  docker  ansible stage1  true  false\nx docker a s false false")
    assert not molecule_run.created_in("")


def test_no_scenario_owns_another_scenarios_or_the_labs_containers() -> None:
    scenarios = sorted(path.parent.name for path in (molecule_run.ROOT / "molecule").glob("*/molecule.yml"))
    platforms = {s: [p["name"] for p in molecule_run.scenario_document(s)["platforms"]] for s in scenarios}
    for scenario in scenarios:
        networks = molecule_run.scenario_networks(scenario)
        others = [name for other in scenarios if other != scenario for name in platforms[other]]
        assert molecule_run.owned([*others, "webstack-s1-lb-01", "webstack-s3-pebble"], networks) == [], scenario


def test_scenarios_use_the_one_wiring_not_a_copy() -> None:
    """A scenario gets the wiring by linking playbooks/group_vars/all/wiring.yml; it never writes its own."""
    root = Path(__file__).resolve().parents[2]
    wiring = (root / "playbooks" / "group_vars" / "all" / "wiring.yml").resolve()
    wired = ("ufw_rules", "webstack_roles_by_group", "webstack_host_roles", "monitoring_server_scrape_jobs")
    # The roles scenario has no wiring at all: it sets each role's inputs by hand, as a stranger reusing it would.
    for scenario in sorted(p for p in (root / "molecule").iterdir() if p.name != "roles"):
        for path in sorted(scenario.rglob("*.yml")):
            if path.is_symlink():
                target = path.resolve()
                assert target.name != "wiring.yml" or target == wiring, f"{path}: links another wiring"
                continue
            text = path.read_text(encoding="utf-8")
            copied = [name for name in wired if re.search(rf"^\s*{name}:", text, re.MULTILINE)]
            assert not copied, f"{path.relative_to(root)} sets the wiring's {copied}: link the wiring instead"


def test_a_failure_excerpt_names_the_task_and_why() -> None:
    log = "\n".join([
        "CRITICAL 'molecule/default/molecule.yml' glob failed.  Exiting.",
        "  \x1b[2m│\x1b[0m TASK [mysql : Apply the settings] ****",
        "  \x1b[2m│\x1b[0m ok: [db-01]",
        "  \x1b[2m│\x1b[0m changed: [db-02] => (item=x)",
        "TASK [quiet] ***",
        "ok: [web-01]",
        "CRITICAL Idempotence test failed because of the following tasks:",
        "* [db-02] => mysql : Apply the settings",
        "FAILED tests/test_x.py::test_y - AssertionError: " + "x" * 500,
    ])
    excerpt = molecule_run.failure_excerpt(log)
    assert excerpt[:2] == ["TASK [mysql : Apply the settings]", "changed: [db-02] => (item=x)"]
    assert "TASK [quiet]" not in excerpt
    assert excerpt[2].startswith("CRITICAL Idempotence") and excerpt[3].startswith("* [db-02]")
    assert len(excerpt[4]) == 400
    assert molecule_run.failure_excerpt("\n".join(["fatal: [a]: FAILED!"] * 50), limit=5) == ["fatal: [a]: FAILED!"] * 5


def test_a_scenario_can_verify_once_the_rest_of_its_group_has_ended() -> None:
    group = molecule_run.parse_group("stage1:bookworm,stage2@stage1.verify,stage3@stage2.verify/solo")
    assert group[2] == molecule_run.Planned("stage3", "bookworm", ("stage2", "verify"), verify_alone=True)
    assert molecule_run.parse_planned("stage3/solo") == molecule_run.Planned("stage3", "bookworm", None, True)
    assert not group[1].verify_alone
    with pytest.raises(ValueError, match="/solo"):
        molecule_run.parse_planned("stage3/alone")
    board = molecule_run.PhaseBoard(["stage1", "stage2", "stage3"])
    board.started("stage1", "verify")
    board.ended("stage2")
    assert not board.events[("stage1", "ended")].is_set()
    board.ended("stage1")
    board.wait_others_ended("stage3")  # returns: both others ended (stage3's own end is not waited for)


def test_the_excerpt_reads_the_failed_phase_only(tmp_path: Path) -> None:
    log = tmp_path / "stage1-bookworm.log"
    converge = "TASK [app : Install]\nchanged: [web-01]\n"
    log.write_text(converge + "TASK [app : Install]\nchanged: [web-01]\nCRITICAL Idempotence test failed\n",
                   encoding="utf-8")
    assert molecule_run.failure_excerpt(molecule_run.failed_phase_output(log, len(converge))) == [
        "TASK [app : Install]", "changed: [web-01]", "CRITICAL Idempotence test failed"]


def test_a_solo_scenarios_timed_tests_are_let_in_once_the_others_have_ended(tmp_path: Path) -> None:
    board = molecule_run.PhaseBoard(["stage1", "stage3"])
    (tmp_path / "stage3").touch()  # an earlier run's flag is not taken for this one's
    flag = molecule_run.alone_flag("stage3", board, tmp_path)
    assert flag == tmp_path / "stage3" and not flag.exists()
    board.ended("stage1")
    deadline = time.monotonic() + 5
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flag.exists()


def test_the_solo_wait_is_bounded_once_per_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "stage3"
    monkeypatch.setenv(molecule_run.ALONE_VARIABLE, str(flag))
    monkeypatch.setattr(probe, "ALONE_DEADLINE", [])
    with pytest.raises(AssertionError, match="did not end within"):
        probe.wait_alone(timeout=0.1)
    started = time.monotonic()
    with pytest.raises(AssertionError, match="did not end within"):
        probe.wait_alone(timeout=0.1)  # the session's bound has passed: no second wait
    assert time.monotonic() - started < 1
    flag.touch()
    probe.wait_alone(timeout=0.1)  # the others have ended: the test goes on
    monkeypatch.delenv(molecule_run.ALONE_VARIABLE)
    monkeypatch.setattr(probe, "ALONE_DEADLINE", [])
    flag.unlink()
    probe.wait_alone(timeout=0.1)  # not under /solo: at once
