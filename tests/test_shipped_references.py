"""Docstrings and comments of the installed package cite nothing that is not shipped with it
(design notes, lecture notes, the repository's README or docs/ pages)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNSHIPPED = re.compile(r"docs/[\w-]+\.md|DESIGN|wave2|lecture|(see|in) (the )?README", re.IGNORECASE)


def test_package_sources_cite_only_what_ships():
    offenders = []
    for folder in ("core", "plugins", "contrib"):
        for path in (ROOT / folder).rglob("*.py"):
            if "example_plugin" in path.parts:
                continue  # a separate distribution with its own README
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if UNSHIPPED.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
