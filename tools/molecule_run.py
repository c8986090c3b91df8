#!/usr/bin/env python3
"""Run Molecule scenarios phase by phase, timing each, and print a summary table at the end.

    python tools/molecule_run.py stage0:bookworm,firewall:bookworm stage1:bookworm ...   (make molecule)

Arguments run one after the other; scenarios joined by a comma run at the same time (light scenarios whose tests
time nothing tight: they share the 2 cores' idle time). A concurrent scenario's output goes to
build/molecule-logs/<scenario>.log and is printed whole once it ends, so CI logs stay readable. Each scenario gets
its own generated-secrets directory (WEBSTACK_SECRETS_DIR/<scenario>).

Why not `molecule test`: the Molecule docker driver creates and destroys containers with async tasks, which
hang under mitogen; the plays under test (converge, idempotence, the verifier's check-mode run) are what
mitogen speeds up. So create and destroy run with Ansible's linear strategy and the rest with the
strategy `lab.mitogen_env()` names (mitogen unless WEBSTACK_MITOGEN=0). `create` includes the scenario's
prepare playbook, `destroy` its cleanup playbook. Every scenario is destroyed at the end,
passed or failed; a failed scenario does not stop the others. Times go to build/molecule-times.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab

ROOT = Path(__file__).resolve().parent.parent
# In order, then "destroy" whatever happened. Molecule's own sequences: `create` also prepares, `destroy` also
# runs the scenario's cleanup playbook. Only the phases that run the plays under test use the fast strategy.
PHASES = ["destroy", "create", "converge", "idempotence", "verify"]
ACCELERATED = {"converge", "idempotence", "verify"}
# Scenarios that run at the same time print their one-line progress through this lock (no interleaved lines).
PRINT_LOCK = threading.Lock()


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

    @property
    def total(self) -> float:
        return round(sum(self.phases.values()), 1)


def parse_pair(pair: str) -> tuple[str, str]:
    """`stage1:bookworm` -> ("stage1", "bookworm"); the release defaults to bookworm."""
    scenario, _, release = pair.partition(":")
    if not scenario or release not in ("", "bookworm", "trixie"):
        raise ValueError(f"molecule_run: bad scenario '{pair}' (use NAME or NAME:bookworm|trixie)")
    return scenario, release or "bookworm"


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


def parse_group(argument: str) -> list[tuple[str, str]]:
    """`stage0:bookworm,firewall` -> the scenarios to run at the same time (one, without a comma)."""
    return [parse_pair(pair) for pair in argument.split(",")]


def secrets_dir(scenario: str, environ: dict[str, str]) -> str:
    """Where a scenario's generated secrets live: its own directory under WEBSTACK_SECRETS_DIR (or build/secrets)."""
    return str(Path(environ.get("WEBSTACK_SECRETS_DIR") or ROOT / "build" / "secrets") / scenario)


def run_phase(scenario: str, phase: str, env: dict[str, str], out: IO[str] | None = None) -> tuple[bool, float]:
    start = time.monotonic()
    code = subprocess.run(["molecule", phase, "-s", scenario], cwd=ROOT, env=env, check=False, stdout=out,
                          stderr=subprocess.STDOUT if out else None).returncode
    return code == 0, round(time.monotonic() - start, 1)


def run_scenario(scenario: str, release: str, fast_env: dict[str, str], out: IO[str] | None = None) -> Result:
    result = Result(scenario, release)
    base = lab.linear_env(dict(os.environ, WEBSTACK_DEBIAN=release,
                               WEBSTACK_SECRETS_DIR=secrets_dir(scenario, dict(os.environ))))
    say(f"=== molecule {scenario} on {release}")

    def run(phase: str) -> bool:
        ok, seconds = run_phase(scenario, phase, dict(base, **fast_env) if phase in ACCELERATED else base, out)
        result.phases[phase] = result.phases.get(phase, 0.0) + seconds
        if not ok and result.failed is None:
            result.failed = phase
        return ok

    try:
        for phase in PHASES:  # the first destroy also resets Molecule's state of an earlier, interrupted run
            if not run(phase):
                break
    finally:
        run("destroy")
    say(f"=== {scenario} on {release}: {result.total:.0f} s, {result.failed or 'passed'}")
    return result


def run_group(group: list[tuple[str, str]], fast_env: dict[str, str], logs: Path) -> list[Result]:
    """One scenario: streamed. Several: at the same time, each into its log, printed whole when all have ended."""
    if len(group) == 1:
        return [run_scenario(*group[0], fast_env)]
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[int, Result] = {}

    def worker(index: int, scenario: str, release: str) -> None:
        with (logs / f"{scenario}-{release}.log").open("w", encoding="utf-8") as out:
            results[index] = run_scenario(scenario, release, fast_env, out)

    threads = [threading.Thread(target=worker, args=(i, *pair)) for i, pair in enumerate(group)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for scenario, release in group:
        print(f"=== output of {scenario} on {release}", flush=True)
        print((logs / f"{scenario}-{release}.log").read_text(encoding="utf-8"), flush=True)
    return [results[i] for i in range(len(group))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+",
                        help="NAME:bookworm|trixie, run in this order; NAME:R,NAME:R run at the same time")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "molecule-times.json")
    args = parser.parse_args(argv)
    groups = [parse_group(argument) for argument in args.scenarios]
    fast_env = lab.mitogen_env()
    start = time.monotonic()
    results = [r for group in groups for r in run_group(group, fast_env, args.out.parent / "molecule-logs")]
    print("\n" + summary(results), flush=True)
    print(f"{'wall clock':<22}{'':>60}{time.monotonic() - start:>8.0f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r.__dict__ | {"total": r.total} for r in results], indent=2) + "\n",
                        encoding="utf-8")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
