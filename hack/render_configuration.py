"""Write the settings tables of docs/configuration.md from the declarations (config.describe).

    python -m hack.render_configuration          # rewrite the tables in place
    python -m hack.render_configuration --check  # exit 1 when the file is out of date

Each table sits between `<!-- settings: <group> -->` and `<!-- /settings -->`; the prose around
them is written by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from passito_jobs.config import markdown_tables

DOCS = Path(__file__).parents[1] / "docs" / "configuration.md"
SECTION = re.compile(
    r"(<!-- settings: (?P<group>[^>]+?) -->\n)(?P<table>.*?)(\n<!-- /settings -->)", re.DOTALL
)


def rendered(text: str) -> str:
    """`text` with every marked table written from the declarations; every group must have one."""
    tables = markdown_tables()
    seen = set()

    def table(match: re.Match[str]) -> str:
        group = match.group("group")
        seen.add(group)
        return f"{match.group(1)}{tables[group]}{match.group(4)}"

    text = SECTION.sub(table, text)
    missing = set(tables) - seen
    if missing:
        raise SystemExit(f"docs/configuration.md has no table for: {', '.join(sorted(missing))}")
    return text


def main() -> int:
    current = DOCS.read_text()
    fresh = rendered(current)
    if "--check" in sys.argv[1:]:
        return 0 if fresh == current else 1
    DOCS.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
