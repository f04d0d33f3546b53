"""What counts as the user's mistake (one line) and what stays a bug (a traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prefloop.cli import run_main
from prefloop.errors import BadInput, NotFoundError, UserError


def test_errors_is_a_leaf():
    code = "import sys, prefloop.errors; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('prefloop', 'labeling', 'reward_model', 'align')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['prefloop', 'prefloop.errors']"


def test_a_user_error_is_one_line(capsys):
    def command(argv):
        raise NotFoundError("project 'x' does not exist")

    assert run_main(command, [], "tool") == 1
    assert capsys.readouterr().err == "tool: error: project 'x' does not exist\n"


@pytest.mark.parametrize("bug", [KeyError("row"), IndexError("list index out of range"), LookupError("x")])
def test_a_bug_keeps_its_traceback(bug):
    """LookupError once counted as bad input, so a KeyError in our own code printed as one calm line."""
    def command(argv):
        raise bug

    assert not isinstance(bug, UserError)
    with pytest.raises(type(bug)):
        run_main(command, [], "tool")


def test_the_store_errors_are_user_errors():
    from labeling.migrations import SchemaError

    assert issubclass(SchemaError, BadInput) and issubclass(NotFoundError, LookupError)
