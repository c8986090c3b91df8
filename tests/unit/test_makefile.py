"""make help names every target the Makefile declares."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def test_help_names_every_phony_target() -> None:
    text = MAKEFILE.read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", text, re.S | re.M)
    assert phony is not None
    targets = set(phony.group(1).replace("\\", " ").split()) - {"help"}
    helped = set(re.findall(r"make ([a-z-]+)", "\n".join(line for line in text.splitlines()
                                                        if line.startswith("#   make"))))
    assert targets - helped == set(), f"make help does not name: {sorted(targets - helped)}"
