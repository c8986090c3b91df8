"""Filter of the app role: the release id of a code base (webstack.stack.release_id)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


def release_id(source_dir: str, prefix: str = "r-") -> str:
    """A release id that changes exactly when the deployed code changes (content hash of the tree)."""
    root = Path(source_dir)
    if not root.is_dir():
        raise ValueError(f"release_id: {source_dir} is not a directory")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if IGNORED_PARTS.intersection(relative.parts) or path.suffix == ".pyc":
            continue
        digest.update(str(relative).encode("utf-8") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return prefix + digest.hexdigest()[:12]


class FilterModule:
    """webstack.stack.release_id."""

    def filters(self) -> dict[str, Any]:
        return {"release_id": release_id}
