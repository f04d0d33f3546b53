"""The fenced blocks of README.md and of the docs pages, in reading order, with the marker comment before each
(`<!-- not-run: REASON -->`, `<!-- file: NAME -->`): what tests/test_readme.py runs and tests/test_docs.py checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMMAND_LANGUAGES = ("bash", "python")
OTHER_LANGUAGES = ("text", "yaml", "nginx", "json")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^\n`]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(?P<kind>not-run|file):\s*(?P<value>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: str  # README.md or docs/NAME.md
    line: int
    language: str
    code: str
    not_run: str | None = None  # the reason, when marked
    file: str | None = None  # the name, when the block is a file the user writes


def pages() -> list[Path]:
    """README.md, then every docs page in mkdocs.yml's nav order."""
    def walk(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from (walk(value) if isinstance(value, list) else [value])

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md"] + [ROOT / "docs" / page for page in walk(nav)]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with the marker comment on the line before it (if any)."""
    text = path.read_text()
    out = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(before)
        code = re.sub(rf"^{match['indent']}", "", match["code"], flags=re.M)
        block = Block(str(path.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1, match["lang"].strip(), code)
        if marker:
            setattr(block, marker["kind"].replace("-", "_"), marker["value"])
        out.append(block)
    return out
