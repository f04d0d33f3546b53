"""One writer of BENCHMARKS.md sections for every bench script (each owns one `## ` section)."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(table: str, section: str, path: Path = PATH) -> None:
    """Replace (or append) the section that starts with the heading `section`, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if section + "\n" in text:
        start = text.index(section + "\n")
        nxt = text.find("\n## ", start + len(section))
        text = text[:start] + table + ("\n" + text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + table
    path.write_text(text)
