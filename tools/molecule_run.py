#!/usr/bin/env python3
"""Run Molecule scenarios phase by phase, timing each, and print a summary table at the end.

    python tools/molecule_run.py stage0:bookworm,firewall:bookworm stage1:bookworm ...   (make molecule)
    python tools/molecule_run.py stage1:bookworm,stage2:bookworm@stage1.verify    stage2 starts once stage1 verifies
    python tools/molecule_run.py stage1,stage3@stage1.verify/solo    stage3's timed tests wait until stage1 has ended
    python tools/molecule_run.py stage1,stage2@stage1.verify,stage3@stage2.ended    stage3 starts once stage2 ended

Arguments run one after the other; scenarios joined by a comma run at the same time (light scenarios whose tests
time nothing tight: they share the 2 cores' idle time). A concurrent scenario's output goes to
build/molecule-logs/<scenario>.log and is printed whole once it ends, so CI logs stay readable. Each scenario gets
its own generated-secrets directory (WEBSTACK_SECRETS_DIR/<scenario>).

Teardown is quick: a scenario's containers are all named after its networks (`<network>-<host>`, the prepare
playbooks' extras too), so they are removed at once with `docker rm -f` before `molecule destroy` (its cleanup
playbook, the networks, Molecule's state); at the start, a scenario with nothing left over (no container, no
network, `molecule list` showing nothing created) needs no destroy. Never `molecule reset`: the docker driver's
reset removes every Molecule container and network, those of the scenarios running beside it too.

Why not `molecule test`: the Molecule docker driver creates and destroys containers with async tasks, which
hang under mitogen; the plays under test (converge, idempotence, the verifier's check-mode run) are what
mitogen speeds up. So create and destroy run with Ansible's linear strategy and the rest with the
strategy `lab.mitogen_env()` names (mitogen unless WEBSTACK_MITOGEN=0). `create` includes the scenario's
prepare playbook, `destroy` its cleanup playbook. Every scenario is destroyed at the end,
passed or failed; a failed scenario does not stop the others. Times go to build/molecule-times.json; every
scenario's output to its log (a scenario alone is streamed too), and the lines that say why a scenario failed to
build/molecule-failures.txt, which `make test` prints last.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab

ROOT = Path(__file__).resolve().parent.parent
# In order, then "destroy" whatever happened; a tested phase the scenario's test_sequence leaves out is skipped.
# Molecule's own sequences: `create` also prepares, `destroy` also runs the scenario's cleanup playbook. Only the
# phases that run the plays under test use the fast strategy.
PHASES = ["destroy", "create", "converge", "idempotence", "verify"]
# What another scenario can wait for (`@stage1.verify`, `@stage1.ended`): a phase starting, or the scenario ending.
MILESTONES = [*PHASES, "ended"]
ACCELERATED = {"converge", "idempotence", "verify"}
# Scenarios that run at the same time print their one-line progress through this lock (no interleaved lines).
PRINT_LOCK = threading.Lock()
# What a failed scenario's log says about its failure: Ansible's failed and changed results, Molecule's list of
# non-idempotent tasks, pytest's failures and assertion lines.
RESULT_LINE = re.compile(r"^(fatal|failed|changed): \[")
FAILURE_LINE = re.compile(r"^(FAILED |E  |ERROR |CRITICAL |Idempotence test failed|\* \[)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def say(line: str) -> None:
    with PRINT_LOCK:
        print(line, flush=True)


@dataclass
class Result:
    """One scenario on one Debian release: seconds per phase, and the phase that failed (if any)."""

    scenario: str
    release: str
    phases: dict[str, float] = field(default_factory=dict)
    failed: str | None = None
    # Where the failed phase's output begins in the scenario's log (what failure_excerpt reads).
    failed_at: int = 0

    @property
    def total(self) -> float:
        return round(sum(self.phases.values()), 1)


def parse_pair(pair: str) -> tuple[str, str]:
    """`stage1:bookworm` -> ("stage1", "bookworm"); the release defaults to bookworm."""
    scenario, _, release = pair.partition(":")
    if not scenario or release not in ("", "bookworm", "trixie"):
        raise ValueError(f"molecule_run: bad scenario '{pair}' (use NAME or NAME:bookworm|trixie)")
    return scenario, release or "bookworm"


def failure_excerpt(log: str, limit: int = 40, width: int = 400) -> list[str]:
    """The lines of a scenario's log that say why it failed, each after the task it belongs to, at most `limit`
    lines of at most `width` characters: a CI log shows only its end, where this is printed."""
    excerpt: list[str] = []
    task = ""
    for raw in log.splitlines():
        line = ANSI.sub("", raw).lstrip(" │").rstrip()
        if line.startswith("TASK ["):
            task = line.rstrip(" *")
        elif RESULT_LINE.match(line):
            excerpt += [task, line[:width]] if task else [line[:width]]
            task = ""
        elif FAILURE_LINE.match(line) and "glob failed" not in line:  # Molecule's every-run default-scenario note
            excerpt.append(line[:width])
    return excerpt[-limit:]


def failed_phase_output(log: Path, begins: int) -> str:
    """The scenario's log from where its failed phase began (the phases that passed say nothing of the failure)."""
    with log.open("rb") as stream:
        stream.seek(begins)
        return stream.read().decode("utf-8", errors="replace")


def summary(results: list[Result]) -> str:
    """A fixed-width table: one row per scenario, one column per phase, the total and the verdict."""
    phases = ["create", "converge", "idempotence", "verify", "destroy"]
    head = f"{'scenario':<22}" + "".join(f"{p:>12}" for p in phases) + f"{'total':>9}  result"
    rows = [head, "-" * len(head)]
    for r in results:
        cells = "".join(f"{r.phases[p]:>11.0f}s" if p in r.phases else f"{'-':>12}" for p in phases)
        verdict = f"FAILED in {r.failed}" if r.failed else "passed"
        rows.append(f"{r.scenario + ':' + r.release:<22}{cells}{r.total:>8.0f}s  {verdict}")
    rows.append(f"{'all scenarios':<22}{'':>{12 * len(phases)}}{sum(r.total for r in results):>8.0f}s")
    return "\n".join(rows)


@dataclass(frozen=True)
class Planned:
    """A scenario of a group, and what it waits for: another scenario of the group reaching a phase (or ending)."""

    scenario: str
    release: str
    after: tuple[str, str] | None = None
    # Its verifier's timed tests wait until every other scenario of the group has ended (alone_flag).
    verify_alone: bool = False


def parse_planned(item: str) -> Planned:
    """`stage2:bookworm@stage1.verify` -> stage2 on bookworm, started once stage1 starts its verify phase
    (`@stage1.ended`: once stage1 has ended, passed or failed); a `/solo` suffix: its verifier's timed tests wait
    until the other scenarios of its group have ended (the tests that call webstack_probe.wait_alone: stage3's)."""
    item, solo, rest = item.partition("/")
    if solo and rest != "solo":
        raise ValueError(f"molecule_run: bad suffix '/{rest}' (the only one is /solo)")
    pair, _, after = item.partition("@")
    scenario, release = parse_pair(pair)
    if not after:
        return Planned(scenario, release, None, bool(solo))
    other, _, phase = after.partition(".")
    if not other or phase not in MILESTONES:
        raise ValueError(f"molecule_run: bad start condition '@{after}' (use @SCENARIO.PHASE, a phase of {PHASES} "
                         "or ended)")
    return Planned(scenario, release, (other, phase), bool(solo))


def parse_group(argument: str) -> list[Planned]:
    """`stage0:bookworm,firewall` -> the scenarios to run at the same time (one, without a comma); one may wait
    for another of the group to reach a phase (`@stage1.verify`), so CPU-bound plays overlap a verifier's waits."""
    group = [parse_planned(item) for item in argument.split(",")]
    names = [planned.scenario for planned in group]
    for planned in group:
        if planned.after and (planned.after[0] not in names or planned.after[0] == planned.scenario):
            raise ValueError(f"molecule_run: {planned.scenario} waits for {planned.after[0]}, "
                             "which is not another scenario of its group")
    reject_deadlocks(group)
    return group


def reject_deadlocks(group: list[Planned]) -> None:
    """A group none of whose scenarios could ever start: a circle of start conditions (`a@b.ended,b@a.verify`), or
    one waiting for a /solo scenario to end, whose timed tests wait for it to end in turn."""
    after = {planned.scenario: planned.after for planned in group}
    solo = {planned.scenario for planned in group if planned.verify_alone}
    for planned in group:
        if planned.after and planned.after[0] in solo and planned.after[1] == "ended":
            raise ValueError(f"molecule_run: {planned.scenario} waits for /solo {planned.after[0]} to end, which "
                             f"waits for {planned.scenario} to end (wait for @{planned.after[0]}.verify instead)")
        chain = [planned.scenario]
        while (condition := after[chain[-1]]) is not None and condition[0] not in chain:
            chain.append(condition[0])
        if condition is not None:
            raise ValueError(f"molecule_run: start conditions wait in a circle: {' -> '.join([*chain, condition[0]])}")


class PhaseBoard:
    """Which phases the scenarios of a group have started, and which have ended (and so started every phase)."""

    def __init__(self, scenarios: Iterable[str]) -> None:
        self.names = list(scenarios)
        self.events = {(name, phase): threading.Event() for name in self.names for phase in MILESTONES}

    def started(self, scenario: str, phase: str) -> None:
        if (scenario, phase) in self.events:
            self.events[(scenario, phase)].set()

    def ended(self, scenario: str) -> None:
        for phase in MILESTONES:
            self.started(scenario, phase)

    def wait(self, scenario: str, phase: str) -> None:
        self.events[(scenario, phase)].wait()

    def wait_others_ended(self, scenario: str) -> None:
        for name in self.names:
            if name != scenario:
                self.wait(name, "ended")


# The verifier of a /solo scenario starts at once; its tests that time failovers wait for this file to exist (the
# other scenarios of the group have ended): webstack_probe.wait_alone(). The others (check mode, static checks)
# run beside them.
ALONE_VARIABLE = "WEBSTACK_ALONE_FILE"


def alone_flag(scenario: str, board: PhaseBoard, directory: Path = ROOT / "build" / "molecule-alone") -> Path:
    """A file that appears once every other scenario of the board has ended (absent until then)."""
    flag = directory / scenario
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.unlink(missing_ok=True)

    def mark() -> None:
        board.wait_others_ended(scenario)
        say(f"=== {scenario}: the rest of its group has ended, its timed tests run")
        flag.touch()

    threading.Thread(target=mark, daemon=True).start()
    return flag


def secrets_dir(scenario: str, environ: dict[str, str]) -> str:
    """Where a scenario's generated secrets live: its own directory under WEBSTACK_SECRETS_DIR (or build/secrets)."""
    return str(Path(environ.get("WEBSTACK_SECRETS_DIR") or ROOT / "build" / "secrets") / scenario)


def scenario_document(scenario: str) -> dict[str, Any]:
    path = ROOT / "molecule" / scenario / "molecule.yml"
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def scenario_phases(scenario: str) -> list[str]:
    """PHASES, less the tested phases its test sequence leaves out (its own, else the shared .config/molecule one)."""
    sequence = scenario_document(scenario).get("scenario", {}).get("test_sequence")
    if sequence is None:
        shared = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text(encoding="utf-8"))
        sequence = shared["scenario"]["test_sequence"]
    return [phase for phase in PHASES if phase not in ACCELERATED or phase in sequence]


def scenario_networks(scenario: str) -> list[str]:
    """The docker networks a scenario's platforms use; its containers are named after them (`<network>-<host>`)."""
    document = scenario_document(scenario)
    return sorted({network["name"] for platform in document.get("platforms", [])
                   for network in platform.get("networks", []) + platform.get("docker_networks", [])})


def owned(names: Iterable[str], networks: list[str]) -> list[str]:
    """The container names that belong to a scenario with these networks."""
    return sorted(name for name in names if any(name.startswith(f"{network}-") for network in networks))


def docker_lines(*args: str) -> list[str]:
    result = lab.sh(["docker", *args], check=False, capture=True)
    return result.stdout.split() if result.returncode == 0 else []


def leftovers(networks: list[str]) -> tuple[list[str], list[str]]:
    """The scenario's containers (any state) and networks that exist now."""
    containers = owned(docker_lines("ps", "-a", "--format", "{{.Names}}"), networks)
    return containers, sorted(set(networks) & set(docker_lines("network", "ls", "--format", "{{.Name}}")))


def created_in(listing: str) -> bool:
    """Whether `molecule list --format plain` output shows an instance created (or converged)."""
    return any("true" in line.split()[-2:] for line in listing.splitlines() if len(line.split()) >= 2)


def recorded_as_created(scenario: str, env: dict[str, str]) -> bool:
    """Molecule's own state for the scenario says its instances exist (an interrupted run); unknown counts as yes."""
    listed = subprocess.run(["molecule", "list", "-s", scenario, "--format", "plain"], cwd=ROOT, env=env,
                            check=False, capture_output=True, text=True)
    return listed.returncode != 0 or created_in(listed.stdout)


def run_phase(scenario: str, phase: str, env: dict[str, str], out: IO[str], echo: bool) -> tuple[bool, float]:
    """One Molecule phase, its output into the scenario's log (and to ours too with `echo`)."""
    start = time.monotonic()
    with subprocess.Popen(["molecule", phase, "-s", scenario], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        for line in process.stdout or []:
            out.write(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
    out.flush()
    return process.returncode == 0, round(time.monotonic() - start, 1)


def run_scenario(scenario: str, release: str, fast_env: dict[str, str], out: IO[str], echo: bool = False,
                 board: PhaseBoard | None = None, verify_alone: bool = False) -> Result:
    result = Result(scenario, release)
    base = lab.linear_env(dict(os.environ, WEBSTACK_DEBIAN=release,
                               WEBSTACK_SECRETS_DIR=secrets_dir(scenario, dict(os.environ))))
    base.pop(ALONE_VARIABLE, None)  # only a /solo scenario's verify gets one (an exported one would hold it an hour)
    say(f"=== molecule {scenario} on {release}")

    def run(phase: str) -> bool:
        env = dict(base, **fast_env) if phase in ACCELERATED else dict(base)
        if board and verify_alone and phase == "verify":
            env[ALONE_VARIABLE] = str(alone_flag(scenario, board))
        if board:
            board.started(scenario, phase)
        begins = out.tell()
        ok, seconds = run_phase(scenario, phase, env, out, echo)
        result.phases[phase] = result.phases.get(phase, 0.0) + seconds
        if not ok and result.failed is None:
            result.failed, result.failed_at = phase, begins
        return ok

    networks = scenario_networks(scenario)

    def teardown() -> bool:
        containers, _ = leftovers(networks)
        if containers:  # killed at once; Molecule's destroy then has only its cleanup playbook and networks to do
            lab.sh(["docker", "rm", "-f", *containers], check=False, capture=True)
        return run("destroy")

    try:
        for phase in scenario_phases(scenario):
            # The first destroy also clears what an earlier, interrupted run left (containers, networks, Molecule's
            # state); with none of that, there is nothing for it to do.
            if phase == "destroy" and not any(leftovers(networks)) and not recorded_as_created(scenario, base):
                continue
            if not (teardown() if phase == "destroy" else run(phase)):
                break
    finally:
        if board:
            board.ended(scenario)
        teardown()
    say(f"=== {scenario} on {release}: {result.total:.0f} s, {result.failed or 'passed'}")
    return result


def log_path(logs: Path, planned: Planned) -> Path:
    return logs / f"{planned.scenario}-{planned.release}.log"


def run_group(group: list[Planned], fast_env: dict[str, str], logs: Path) -> list[Result]:
    """One scenario: streamed (and logged). Several: at the same time (each once what it waits for has begun), each
    into its log, printed whole when all have ended."""
    logs.mkdir(parents=True, exist_ok=True)
    if len(group) == 1:
        with log_path(logs, group[0]).open("w", encoding="utf-8") as out:
            return [run_scenario(group[0].scenario, group[0].release, fast_env, out, echo=True)]
    results: dict[int, Result] = {}
    board = PhaseBoard(planned.scenario for planned in group)

    def worker(index: int, planned: Planned) -> None:
        if planned.after:
            say(f"=== molecule {planned.scenario} waits for {planned.after[0]}'s {planned.after[1]}")
            board.wait(*planned.after)
        try:
            with log_path(logs, planned).open("w", encoding="utf-8") as out:
                results[index] = run_scenario(planned.scenario, planned.release, fast_env, out, board=board,
                                              verify_alone=planned.verify_alone)
        finally:
            board.ended(planned.scenario)  # whatever happened, nothing waits on it for ever

    threads = [threading.Thread(target=worker, args=(i, planned)) for i, planned in enumerate(group)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for planned in group:
        print(f"=== output of {planned.scenario} on {planned.release}", flush=True)
        print(log_path(logs, planned).read_text(encoding="utf-8"), flush=True)
    return [results[i] for i in range(len(group))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+",
                        help="NAME:bookworm|trixie, run in this order; NAME:R,NAME:R run at the same time")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "molecule-times.json")
    args = parser.parse_args(argv)
    try:
        groups = [parse_group(argument) for argument in args.scenarios]
    except ValueError as error:
        parser.error(str(error))  # exits 2, before any scenario starts
    fast_env = lab.mitogen_env()
    start = time.monotonic()
    logs = args.out.parent / "molecule-logs"
    results = [r for group in groups for r in run_group(group, fast_env, logs)]
    print("\n" + summary(results), flush=True)
    print(f"{'wall clock':<22}{'':>60}{time.monotonic() - start:>8.0f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Why each failed scenario failed, in a file `make test` prints last (a CI log shows only its end).
    planned_all = [planned for group in groups for planned in group]  # the order of results
    failures = [f"=== {r.scenario} on {r.release}: FAILED in {r.failed} (whole log: {log_path(logs, planned)})\n"
                + "\n".join(failure_excerpt(failed_phase_output(log_path(logs, planned), r.failed_at)))
                for planned, r in zip(planned_all, results, strict=True) if r.failed]
    (args.out.parent / "molecule-failures.txt").write_text("\n".join(failures) + ("\n" if failures else ""),
                                                           encoding="utf-8")
    args.out.write_text(json.dumps([r.__dict__ | {"total": r.total} for r in results], indent=2) + "\n",
                        encoding="utf-8")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
