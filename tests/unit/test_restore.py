"""playbooks/restore.yml refuses, before touching a host, the runs that would skip part of it and restore nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def restore(*options: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """playbooks/restore.yml against the stage 1 inventory (no host is reachable here); its whole output."""
    result = subprocess.run(
        ["ansible-playbook", "-i", str(ROOT / "inventories" / "stage1"), str(ROOT / "playbooks" / "restore.yml"),
         *options], env=dict(os.environ, ANSIBLE_NOCOLOR="1"), capture_output=True, text=True, timeout=120,
        check=False, cwd=ROOT)
    return result, result.stdout + result.stderr


@pytest.mark.parametrize("options", [["--limit", "web-01"], ["--tags", "database"]])
def test_a_limit_or_tags_are_refused_before_anything_runs(options: list[str]) -> None:
    result, out = restore(*options)
    assert result.returncode != 0 and "restore: run it without --limit" in out, out[-3000:]
    assert "changed=0" in result.stdout and "Copy the backup" not in result.stdout


def test_a_plain_run_passes_the_refusal() -> None:
    """No limit, no tags (a --skip-tags skips nothing of it): past the refusal, on to the inputs' check."""
    result, out = restore("--skip-tags", "notest", "-e", "restore_to=no-such-host")
    assert "restore: run it without --limit" not in out, out[-3000:]
    assert result.returncode != 0 and "restore_to (no-such-host)" in out, out[-3000:]
