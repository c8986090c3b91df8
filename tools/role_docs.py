#!/usr/bin/env python3
"""A role's variables as a Markdown table, from meta/argument_specs.yml (the one source: type, default, description).

    python tools/role_docs.py roles/nginx            print the table
    python tools/role_docs.py --write roles/*        replace the table under "## Variables" in each README.md
    python tools/role_docs.py --check roles/*        exit 1 if a README's table differs (the unit tests run this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HEADING = "## Variables"


def _cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def variables_table(specs_file: Path) -> str:
    """One row per option of the main entry point: name, type, default, description."""
    specs = yaml.safe_load(specs_file.read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = specs["argument_specs"]["main"]["options"]
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, spec in options.items():
        kind = spec.get("type", "str") + (f" of {spec['elements']}" if "elements" in spec else "")
        if "choices" in spec:
            kind += " (" + ", ".join(str(c) for c in spec["choices"]) + ")"
        description = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | `{_cell(spec.get('default'))}` | {description} |")
    return "\n".join(rows)


def with_table(readme: str, table: str) -> str:
    """The README with the block under "## Variables" (up to the next heading) replaced by `table`."""
    start = readme.index(HEADING) + len(HEADING)
    end = readme.find("\n## ", start)
    rest = readme[end:] if end >= 0 else "\n"
    return readme[:start] + "\n\n" + table + "\n" + rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument("roles", nargs="+", type=Path)
    args = parser.parse_args(argv)
    drifted = []
    for role in args.roles:
        table = variables_table(role / "meta" / "argument_specs.yml")
        if not (args.write or args.check):
            print(table)
            continue
        readme = role / "README.md"
        current = readme.read_text(encoding="utf-8")
        wanted = with_table(current, table)
        if args.write and wanted != current:
            readme.write_text(wanted, encoding="utf-8")
        elif args.check and wanted != current:
            drifted.append(str(readme))
    if drifted:
        print(f"role_docs: out of date (run tools/role_docs.py --write roles/*): {drifted}", file=sys.stderr)
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
