"""Make the repository's app/, filter_plugins/ and plugins/filter/ importable in unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True
for sub in ("app", "filter_plugins", "plugins/filter", "tools", "tests/integration"):
    path = str(ROOT / sub)
    if path not in sys.path:
        sys.path.insert(0, path)
