"""The `labeling` command line, run as a user runs it (subprocesses on a SQLite file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def labeling(*args, stdin=None, check=True):
    result = subprocess.run([str(BIN / "labeling"), *map(str, args)], input=stdin, capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"labeling {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def test_help_imports_nothing_heavy():
    code = ("import sys, labeling.cli; labeling.cli.main(['--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'gradio', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_store_workflow_from_the_command_line(tmp_path, tiny_model_dir):
    db = tmp_path / "p.db"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?"}) for i in range(3)) + "\n")
    labeling("init", "--store", db, "--project", "demo", "--overlap", "2", "--criteria", "helpfulness", "honesty")
    labeling("users", "add", "ann1", "--store", db, stdin="a-long-password\n")
    labeling("users", "add", "boss", "--role", "admin", "--password", "another-password", "--store", db)
    assert "ann1" in labeling("users", "list", "--store", db).stdout
    assert "3 new prompts" in labeling("import", "--store", db, "--project", "demo", "--file", prompts).stdout
    out = labeling("generate", "--store", db, "--project", "demo", "--models", tiny_model_dir, "-n", "2",
                   "--max-new-tokens", "4", "--temperature", "1.0").stdout
    assert "candidates for 3 prompts" in out
    assert "tasks added" in labeling("tasks", "build", "--store", db, "--project", "demo", "--strategy", "all_pairs").stdout
    labeling("users", "disable", "ann1", "--store", db)
    assert "disabled" in labeling("users", "list", "--store", db).stdout


def test_bad_input_is_one_line_and_exit_code_1(tmp_path):
    db = tmp_path / "p.db"
    labeling("init", "--store", db, "--project", "demo")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 42}\n')
    result = labeling("import", "--store", db, "--project", "demo", "--file", bad, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "bad.jsonl: row 2: field 'prompt'" in result.stderr
    missing = labeling("import", "--store", db, "--project", "demo", "--file", tmp_path / "nope.csv", check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "fine"}\n')
    labeling("import", "--store", db, "--project", "demo", "--file", good)
    model = labeling("generate", "--store", db, "--project", "demo", "--models", tmp_path / "no-model", check=False)
    assert model.returncode == 1 and "no-model: no such directory" in model.stderr
    assert model.stderr.strip().count("\n") == 0


def test_users_add_says_when_it_reads_the_password_from_standard_input(tmp_path):
    db = tmp_path / "s.db"
    labeling("init", "--store", db)
    added = labeling("users", "add", "ann", "--store", db, stdin="a-long-password\n")  # there already: no notice
    assert "reading" not in added.stderr and "ann" in added.stdout
    waiting = subprocess.Popen([str(BIN / "labeling"), "users", "add", "bob", "--store", str(db)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "reading the first line of standard input" in waiting.stderr.readline()  # said while it waits
    out, _ = waiting.communicate("another-long-password\n", timeout=60)
    assert waiting.returncode == 0 and "bob" in out
    assert "stdin is not a terminal" in " ".join(labeling("users", "--help").stdout.split())
