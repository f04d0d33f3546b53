"""Every top-level command and every `COMMAND --help` answers with usage and exit 0.

The three console scripts run as subprocesses (as a user runs them); each subcommand's
--help goes through the same `main(argv)` in-process, which keeps this file fast.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TOOLS = {"labeling": "labeling.cli", "reward-model": "reward_model.cli", "align": "loop.cli"}
SUBCOMMANDS = [(tool, name) for tool, module in TOOLS.items() for name in importlib.import_module(module).COMMANDS]
# Subcommands that take a leading action word answer --help after it too.
ACTIONS = [("labeling", ["users", "add"]), ("labeling", ["users", "list"]), ("labeling", ["tasks", "build"])]


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"]], ids=["no-arguments", "--help", "-h"])
@pytest.mark.parametrize("tool", list(TOOLS))
def test_top_level_prints_usage_and_exits_0(tool, args):
    result = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {tool} COMMAND")
    for name in importlib.import_module(TOOLS[tool]).COMMANDS:
        assert f"\n  {name} " in result.stdout
    assert result.stderr == ""


def _help(tool: str, argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = importlib.import_module(TOOLS[tool]).main(argv)
    except SystemExit as exit_:  # argparse's --help
        rc = exit_.code
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("tool,words", [(t, [n]) for t, n in SUBCOMMANDS] + ACTIONS,
                         ids=[f"{t} {' '.join(w)}" for t, w in [(t, [n]) for t, n in SUBCOMMANDS] + ACTIONS])
def test_every_subcommand_help_prints_usage_and_exits_0(tool, words, capsys):
    rc, out = _help(tool, [*words, "--help"], capsys)
    assert rc == 0
    assert out.startswith(f"usage: {tool} {words[0]}")
    assert "option_strings" not in out  # a help text with a bare % once printed argparse's internals
    assert "--config" in out


def test_gradient_checkpointing_help_reads_as_written(capsys):
    _, out = _help("reward-model", ["train", "--help"], capsys)
    assert "~30% slower" in " ".join(out.split())


def test_subcommand_help_from_the_console_script():
    result = subprocess.run([str(BIN / "align"), "ppo", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: align ppo")


# the scripts (a `__main__` block), not their helper modules (common.py, server_*.py)
BENCHES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", BENCHES)
def test_every_bench_script_answers_help(script):
    """The benches BENCHMARKS.md names are commands too: `python bench/X.py --help` prints usage, exit 0."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "bench" / script), "--help"], capture_output=True,
                            text=True, timeout=120, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:") and result.stderr == ""


@pytest.mark.parametrize("tool,words,flag", [
    ("reward-model", ["score"], "--overwrite"), ("labeling", ["leaderboard"], "--overwrite"),
], ids=["reward-model score --overwrite", "labeling leaderboard --overwrite"])
def test_new_flags_are_in_the_help(tool, words, flag, capsys):
    _, out = _help(tool, [*words, "--help"], capsys)
    assert f"\n  {flag} " in out


def test_declared_ranges_are_in_the_help(capsys):
    """A field's range (prefloop.config.check_ranges) is shown beside its default."""
    _, out = _help("align", ["dpo", "--help"], capsys)
    assert "(default: None; >= 1)" in " ".join(out.split())  # --max-steps: unset means the epochs
    _, out = _help("labeling", ["leaderboard", "--help"], capsys)
    assert "(default: 0.95; in (0, 1))" in " ".join(out.split())


def test_reward_model_serve_help_names_its_limits_and_token(capsys):
    rc, out = _help("reward-model", ["serve", "--help"], capsys)
    text = " ".join(out.split())
    assert rc == 0 and "OpenRLHF's remote reward-model protocol" in text
    for flag in ("--model", "--host", "--port", "--token-file", "--no-auth", "--max-batch", "--batch-wait-ms",
                 "--max-pairs-per-request", "--max-body-mb", "--max-pending", "--dtype", "--device"):
        assert flag in text
    assert "$PREFLOOP_RM_TOKEN" in text and "only on a loopback --host" in text


@pytest.mark.parametrize("tool,name", [("reward-model", "train"), ("align", "sft"), ("align", "dpo"),
                                       ("align", "ppo"), ("align", "online-dpo"), ("align", "grpo"),
                                       ("align", "rloo"), ("align", "eval")])
def test_every_trainer_and_eval_take_report_to(tool, name, capsys):
    _, out = _help(tool, [name, "--help"], capsys)
    text = " ".join(out.split())
    assert "--report-to REPORT_TO [REPORT_TO ...]" in text
    assert "tensorboard, wandb, mlflow" in text and "(default: ['tensorboard'])" in text
