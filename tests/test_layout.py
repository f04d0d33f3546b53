"""The house has no circle and no arrow upwards, and no room is too big (issue 21; /work/shared/DESIGN.md).

Read from the source (every import statement, the lazy ones inside functions too), nothing imported:

    prefloop  <-  labeling  <-  reward_model  <-  align  <-  loop          (top-level packages)
    align's shared modules  <-  graders  <-  onpolicy  <-  evaluation      (align's rooms; offline: shared only)

An arrow upwards (labeling importing align, align importing loop, onpolicy importing evaluation) or a
circle between two modules fails here, with the file and line of the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("prefloop", "labeling", "reward_model", "align", "loop")
# package -> the packages of ours it may import (DESIGN.md: "Imports run one way")
ALLOWED = {
    "prefloop": set(),
    "labeling": {"prefloop"},
    "reward_model": {"prefloop", "labeling"},
    "align": {"prefloop", "labeling", "reward_model"},
    "loop": {"prefloop", "labeling", "reward_model", "align"},
}
# align's rooms -> the rooms they may import; "align" is the shared modules at its top (losses, prompts, ...)
ROOMS = {
    "align": set(),
    "align.graders": {"align"},
    "align.offline": {"align"},
    "align.onpolicy": {"align", "align.graders"},
    "align.evaluation": {"align", "align.onpolicy"},
}
FORBIDDEN = {"reward_model": "labeling.app", "align": "labeling.app"}  # the web app is labeling's alone
MAX_LINES = 400
# over MAX_LINES until the `naming` branch (which splits them) is merged; then this set must be emptied
KNOWN_LONG: set[str] = set()


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def resolve(name: str) -> str | None:
    """The module of ours that `import name` (or `from name import …`) loads last: a module, or a package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path) -> list[tuple[str, int]]:
    """(module of ours, line) for every import in `path`, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from align.graders import budget` names a module; `from align.graders import grade` the package
            names = [resolve(f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [resolve(alias.name) for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name]
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def room(module: str) -> str:
    """align.onpolicy.loop -> align.onpolicy; align.losses -> align (the shared modules)."""
    first_two = ".".join(module.split(".")[:2])
    return first_two if first_two in ROOMS else "align"


def test_the_rules_name_every_room():
    rooms = {room(m) for m in MODULES if m.startswith("align")}
    assert rooms == set(ROOMS), "a new room of align: give it its arrows in ROOMS"
    assert {m.split(".")[0] for m in MODULES} == set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_arrow_upwards_between_packages(package):
    wrong = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
             for m, targets in GRAPH.items() if m.split(".")[0] == package
             for target, line in targets
             if target.split(".")[0] != package and target.split(".")[0] not in ALLOWED[package]
             or target.startswith(FORBIDDEN.get(package, "-"))]
    assert not wrong, "\n".join(wrong)


def test_align_rooms_import_downwards_only():
    wrong = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
             for m, targets in GRAPH.items() if m.startswith("align.")
             for target, line in targets
             if target.startswith("align") and room(target) != room(m) and room(target) not in ROOMS[room(m)]]
    assert not wrong, "\n".join(wrong)


def test_align_cli_offers_align_and_loop_adds_round_and_demo():
    """The `align` console script is loop.cli: align's table, unchanged, plus the whole-loop commands."""
    from align.cli import COMMANDS as ALIGN
    from loop.cli import COMMANDS as ALL

    assert {name: ALL[name] for name in ALIGN} == ALIGN
    assert set(ALL) - set(ALIGN) == {"round", "demo"}
    assert all(entry[0].startswith("loop.") for name, entry in ALL.items() if name not in ALIGN)
    assert all(entry[0].startswith("align.") for entry in ALIGN.values())


def test_no_circle_between_modules():
    """Tarjan's strongly connected components of the module graph: each must be one module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in GRAPH[v]:
            if w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, circles


def test_no_module_over_400_lines():
    long = {str(path.relative_to(ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= KNOWN_LONG, {k: v for k, v in long.items() if k not in KNOWN_LONG}
    assert KNOWN_LONG <= set(long), f"{sorted(KNOWN_LONG - set(long))}: no longer long, take it out of KNOWN_LONG"


def test_each_package_says_what_it_owns():
    for name in (*PACKAGES, *[r for r in ROOMS if r != "align"]):
        doc = ast.get_docstring(ast.parse(MODULES[name].read_text()))
        assert doc and len(doc) > 40, f"{name}/__init__.py: a docstring that says what the package owns"


def test_no_test_imports_a_test_module():
    """What tests share lives in helper modules (conftest, *_helpers, _labeling_seed, doc_blocks), not in another
    test module: importing one runs its module-level set-up and makes pytest collect its tests twice."""
    tests = {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in tests]
    assert not found, found
