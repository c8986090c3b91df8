#!/usr/bin/env python3
"""Print a role's variables as a Markdown table, from defaults/main.yml and its comment lines.

    python tools/role_docs.py roles/nginx
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def variables_table(defaults_file: Path) -> str:
    """One row per variable: name, default, the comment line above it."""
    lines = defaults_file.read_text(encoding="utf-8").splitlines()
    values = yaml.safe_load("\n".join(lines)) or {}
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for index, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and ":" in line and line != "---":
            name = line.split(":", 1)[0]
            comment = lines[index - 1].lstrip("# ").strip() if lines[index - 1].startswith("#") else ""
            default = json.dumps(values.get(name))
            if len(default) > 60:
                default = default[:57] + "..."
            rows.append(f"| `{name}` | `{default}` | {comment} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    for role in argv:
        print(variables_table(Path(role) / "defaults" / "main.yml"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
