"""RFT datasets: files, per-row and per-dataset graders, one-line errors, and the round trip through the store."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from align.graders import grade
from align.graders.mix import GraderMix
from align.onpolicy.rft_data import load_rft_dataset
from labeling.cli import main as labeling_main
from prefloop.data import write_records
from prefloop.errors import InputError

ROWS = [
    {"prompt": "What is 3/4 of 8?", "reference": "6", "grader": "math"},
    {"messages": [{"role": "user", "content": "Extract the name."}], "reference": {"name": "Ada"},
     "grader": {"graders": [{"name": "json_fields", "weight": 0.8}, {"name": "length", "weight": 0.2,
                                                                       "max_words": 20}]}, "id": "x7"},
    {"text": "Capital of France?", "reference": ["Paris", "paris, france"]},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_with_their_own_graders_and_a_dataset_default(tmp_path):
    examples = load_rft_dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), grader={"name": "string_check",
                                                                                 "mode": "contains"})
    assert [e.graders[0].name for e in examples] == ["math", "json_fields", "string_check"]
    assert examples[1].prompt == [{"role": "user", "content": "Extract the name."}]
    assert examples[1].meta == {"id": "x7"} and examples[2].reference == ["Paris", "paris, france"]
    mix = GraderMix()
    out = mix([e.prompt for e in examples], ["The answer is 6", '{"name": "ada"}', "It is Paris."],
              [e.reference for e in examples], [e.graders for e in examples])
    assert out.scores == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("row, message", [
    ({"reference": "6", "grader": "math"}, "row 2: no 'prompt', 'messages', 'text' field"),
    ({"prompt": "q", "grader": "math"}, "row 2: field 'reference': missing"),
    ({"prompt": "q", "reference": "6"}, "row 2: field 'grader': missing, and the dataset has no default"),
    ({"prompt": "q", "reference": "6", "grader": "maths"}, "row 2: field 'grader': unknown grader 'maths'"),
    ({"prompt": "q", "reference": "6", "grader": {"name": "math", "tol": 1}}, "row 2: field 'grader': math has no"),
    ({"prompt": "", "reference": "6", "grader": "math"}, "row 2: field 'prompt': expected a non-empty string"),
])
def test_bad_rows_are_one_line_errors_naming_file_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(InputError) as err:
        load_rft_dataset(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_csv_datasets_dir_field_mapping_and_limit(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(5)]
    for path in (tmp_path / "gsm.csv", tmp_path / "gsm_ds"):
        write_records(rows, path)
        examples = load_rft_dataset(path, grader="math", prompt_field="question", reference_field="answer", limit=3)
        assert len(examples) == 3 and examples[2].prompt == "What is 2 + 2?"
        # GSM8K's worked answer holds its number after ####: the maths grader reads it there
        assert grade("math", examples[2].prompt, "so \\boxed{4}", examples[2].reference) == 1.0


def make_db(path):
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE item (name TEXT, price REAL); INSERT INTO item VALUES ('pen', 2), ('ink', 9);")
    conn.commit()
    conn.close()
    return path


SQL_ROW = {"prompt": "Items over 5?", "reference": "SELECT name FROM item WHERE price > 5",
           "grader": {"name": "sql", "db": "shop.db"}}


def test_a_rows_sql_database_resolves_inside_the_operators_sql_dir(tmp_path, monkeypatch):
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    make_db(task_dir / "shop.db")
    monkeypatch.chdir(tmp_path)  # neither the dataset's folder nor sql_dir
    example = load_rft_dataset(write_jsonl(tmp_path / "t.jsonl", [SQL_ROW]), sql_dir="task")[0]
    assert example.graders[0].options["db"] == str((task_dir / "shop.db").resolve())
    assert grade("sql", example.prompt, "SELECT name FROM item WHERE price > 5", example.reference,
                 **example.graders[0].options) == 1.0
    missing = {**SQL_ROW, "grader": {"name": "sql", "db": "missing.db"}}
    with pytest.raises(InputError, match="row 1: field 'grader': sql database 'missing.db' not found in sql_dir"):
        load_rft_dataset(write_jsonl(tmp_path / "t2.jsonl", [missing]), sql_dir="task")
    # the operator's own spec may name a database anywhere; relative ones resolve in sql_dir
    operator = load_rft_dataset(write_jsonl(tmp_path / "t3.jsonl", [{"prompt": "q", "reference": "SELECT 1"}]),
                                grader={"name": "sql", "db": "shop.db"}, sql_dir="task")[0]
    assert operator.graders[0].options["db"] == str(Path("task") / "shop.db")


def test_rows_time_limit_is_checked_here_and_capped_by_the_budget_when_graded(tmp_path):
    make_db(tmp_path / "shop.db")
    row = {**SQL_ROW, "grader": {"name": "sql", "db": "shop.db", "time_limit": 1e9}}
    example = load_rft_dataset(write_jsonl(tmp_path / "t.jsonl", [row]), sql_dir=tmp_path)[0]
    from align.graders.budget import Budget, clamp_options

    assert clamp_options("sql", example.graders[0].options, Budget(time_limit=2.0))["time_limit"] == 2.0
    assert clamp_options("sql", {"db": "x"}, Budget(time_limit=0.5))["time_limit"] == 0.5  # the default 1 s too
    assert clamp_options("sql", {"time_limit": 0.1}, Budget(time_limit=2.0))["time_limit"] == 0.1  # tighter stays


def evil_module(tmp_path, monkeypatch) -> Path:
    """A module that, imported, writes a marker file: a refused row must never import it."""
    marker = tmp_path / "imported.marker"
    (tmp_path / "evil_grader_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef f(prompt, response, reference):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


OPERATOR_ONLY_ROWS = {  # the row's grader field -> what the line must say
    "python": ({"name": "python", "function": "evil_grader_mod:f"}, "the python grader imports code"),
    "python-execl": ({"name": "python", "function": "os:execl"}, "the python grader imports code"),
    "python in a mix": ({"graders": [{"name": "math"}, {"name": "python", "function": "shutil:rmtree"}]},
                        "field 'grader'[1]: the python grader imports code"),
    "reward_model": ({"name": "reward_model", "path": "os:getcwd"}, "reward_model grader loads a model"),
    "judge model": ({"name": "judge", "model": "/etc"}, "judge option 'model' loads a model"),
    "db without sql_dir": ({"name": "sql", "db": "shop.db"}, "no sql_dir was given"),
    "absolute db": ({"name": "sql", "db": "/etc/passwd"}, "must be a relative path inside sql_dir"),
    "db with ..": ({"name": "sql", "db": "../shop.db"}, "without '..'"),
    "symlink out": ({"name": "sql", "db": "link.db"}, "leads out of sql_dir"),
    "sql without db": ({"name": "sql"}, "sql needs option 'db'"),
    "time_limit nan": ({"name": "sql", "db": "shop.db", "time_limit": float("nan")}, "time_limit must be a number"),
    "time_limit text": ({"name": "sql", "db": "shop.db", "time_limit": "1e9"}, "time_limit must be a number"),
    "time_limit 0": ({"name": "sql", "db": "shop.db", "time_limit": 0}, "time_limit must be a number"),
}


@pytest.mark.parametrize("name", list(OPERATOR_ONLY_ROWS))
def test_a_row_may_not_name_what_only_the_operator_may(tmp_path, monkeypatch, name):
    spec, message = OPERATOR_ONLY_ROWS[name]
    marker = evil_module(tmp_path, monkeypatch)
    make_db(tmp_path / "shop.db")
    sql_dir = tmp_path / "dbs"
    sql_dir.mkdir()
    (sql_dir / "link.db").symlink_to(tmp_path / "shop.db")
    path = write_jsonl(tmp_path / "rows.jsonl", [ROWS[0], {"prompt": "q", "reference": "1", "grader": spec}])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as err:
        load_rft_dataset(path, sql_dir=None if name == "db without sql_dir" else sql_dir)
    line = str(err.value)
    assert line.startswith(f"{path}: row 2: field 'grader'") and message in line and "\n" not in line
    assert not marker.exists() and "evil_grader_mod" not in sys.modules  # nothing imported, nothing ran
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_operator_may_name_a_python_grader_for_the_rows(tmp_path, monkeypatch):
    marker = evil_module(tmp_path, monkeypatch)
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "reference": "1"}])
    example = load_rft_dataset(path, grader={"name": "python", "function": "evil_grader_mod:f"})[0]
    assert example.graders[0].name == "python" and not marker.exists()  # named, not yet imported


def test_store_metadata_rows_follow_the_same_rule(tmp_path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert labeling_main(["init", "--store", db, "--project", "rft"]) == 0
    rows = write_jsonl(tmp_path / "rft.jsonl", [{"prompt": "q", "reference": "1",
                                                 "grader": {"name": "python", "function": "os:getcwd"}}])
    assert labeling_main(["import", "--store", db, "--project", "rft", "--file", str(rows)]) == 0
    with pytest.raises(InputError, match=r"^rft: prompt id \d+: field 'grader': the python grader imports code"):
        load_rft_dataset(store=db, project="rft")


def test_align_grpo_refuses_the_row_before_anything_is_written_or_loaded(tmp_path, monkeypatch, capfd):
    from align.cli import main as align_main

    marker = evil_module(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "reference": "1",
                                           "grader": {"name": "python", "function": "evil_grader_mod:f"}}])
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = align_main(["grpo", "--prompts", "rows.jsonl", "--output-dir", "run", "--max-steps", "1"])
    err = capfd.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "rows.jsonl: row 1: field 'grader': the python grader imports code" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not marker.exists()


def test_rft_rows_import_into_the_store_beside_preference_rows_and_read_back(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert labeling_main(["init", "--store", db, "--project", "mixed"]) == 0
    rft = write_jsonl(tmp_path / "rft.jsonl", ROWS[:2])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])
    assert labeling_main(["import", "--store", db, "--project", "mixed", "--file", str(rft)]) == 0
    assert labeling_main(["import", "--store", db, "--project", "mixed", "--file", str(prefs)]) == 0
    examples = load_rft_dataset(store=db, project="mixed")  # the preference prompt has no reference: skipped
    assert [e.reference for e in examples] == ["6", {"name": "Ada"}]
    assert [e.graders[0].name for e in examples] == ["math", "json_fields"]
    assert examples[1].meta == {"id": "x7"}


def test_an_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no RFT examples"):
        load_rft_dataset(write_jsonl(tmp_path / "empty.jsonl", []), grader="math")
