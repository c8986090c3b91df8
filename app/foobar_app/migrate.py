"""Create the schema on the write database: `python3 -m foobar_app.migrate`.

Prints `created` or `unchanged` so a deploy tool can report change honestly.
"""

from __future__ import annotations

import sys

from foobar_app.config import load_settings
from foobar_app.store import MySQLStore, StoreError


def main() -> int:
    settings = load_settings()
    try:
        created = MySQLStore(settings.write_db, settings.read_db).migrate()
    except StoreError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print("created" if created else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
