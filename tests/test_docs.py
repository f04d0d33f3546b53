"""The documentation: the site builds with --strict, the reference pages match the code, the README
stays short and lists every command, and every fenced block says what it is (tests/test_readme.py
runs the command blocks)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import COMMAND_LANGUAGES, OTHER_LANGUAGES, blocks, pages

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_README_LINES = 250
MAX_PICTURE_BYTES = 300_000


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"


def test_reference_pages_match_the_code():
    for path, text in _generator().render().items():
        assert path.exists() and path.read_text() == text, \
            f"{path.relative_to(ROOT)} differs from what the code generates: run `python docs/gen_reference.py`"


def test_reference_lists_every_command_and_flag():
    """The generated page holds each command's flags as its parser has them (a flag added later shows up)."""
    from prefloop.config import build_parser

    gen = _generator()
    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    for tool, name, _, cls in gen.commands():
        section = cli.split(f"\n### {tool} {name}\n", 1)[1].split("\n### ", 1)[0]
        for action in build_parser(cls).parse_known_args([])[0].__dict__:
            assert f"`--{action.replace('_', '-')}`" in section, (tool, name, action)


def test_every_command_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for tool, module in {"labeling": "labeling.cli", "reward-model": "reward_model.cli", "align": "loop.cli"}.items():
        for name in importlib.import_module(module).COMMANDS:
            assert f"\n| `{tool} {name}` | " in readme, f"README's command table lacks `{tool} {name}`"


def test_every_fenced_block_declares_what_it_is():
    """A command block runs (test_readme) or says why not; anything else names a non-command language."""
    seen = 0
    for page in pages():
        for block in blocks(page):
            seen += 1
            where = f"{block.page}:{block.line}"
            assert block.language in COMMAND_LANGUAGES + OTHER_LANGUAGES, \
                f"{where}: fenced block with language {block.language!r}; use one of {COMMAND_LANGUAGES + OTHER_LANGUAGES}"
            assert block.not_run is None or len(block.not_run) > 10, f"{where}: a not-run marker needs its reason"
    assert seen > 20


def test_pictures_are_small_and_used():
    docs = "\n".join(page.read_text() for page in pages())
    for picture in sorted((ROOT / "docs").glob("*.png")):
        assert picture.stat().st_size <= MAX_PICTURE_BYTES, f"{picture.name}: {picture.stat().st_size} bytes"
        assert re.search(rf"\]\((docs/)?{re.escape(picture.name)}\)", docs), f"{picture.name} is in no page"


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict` (what `python3 dev.py docs` runs): a broken link, anchor or include fails."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "deployment/index.html", "reference/cli/index.html", "reference/config/index.html"):
        assert (site / page).exists(), page
    # BENCHMARKS.md is included, not copied by hand: its last section reaches the site
    last = re.findall(r"^## (.+)$", (ROOT / "BENCHMARKS.md").read_text(), flags=re.M)[-1]
    assert last in (site / "benchmarks" / "index.html").read_text()


@pytest.mark.parametrize("page", ["getting-started.md", "labeling.md", "deployment.md", "reward-models.md",
                                  "alignment.md", "rft.md", "evaluation.md", "scale-out.md", "benchmarks.md"])
def test_the_pages_the_issue_asks_for_are_in_the_nav(page):
    assert ROOT / "docs" / page in pages()
