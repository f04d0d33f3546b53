"""RFT datasets: files, per-row and per-dataset graders, one-line errors, and the round trip through the store."""

import json
import sqlite3

import pytest

from align.graders import grade
from align.graders.mix import GraderMix
from align.rft_data import load_rft_dataset
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


def test_a_relative_sql_database_is_found_beside_the_dataset(tmp_path, monkeypatch):
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    conn = sqlite3.connect(task_dir / "shop.db")
    conn.executescript("CREATE TABLE item (name TEXT, price REAL); INSERT INTO item VALUES ('pen', 2), ('ink', 9);")
    conn.commit()
    conn.close()
    row = {"prompt": "Items over 5?", "reference": "SELECT name FROM item WHERE price > 5",
           "grader": {"name": "sql", "db": "shop.db"}}
    monkeypatch.chdir(tmp_path)  # not the dataset's folder
    example = load_rft_dataset(write_jsonl(task_dir / "t.jsonl", [row]))[0]
    assert example.graders[0].options["db"] == str(task_dir / "shop.db")
    assert grade("sql", example.prompt, "SELECT name FROM item WHERE price > 5", example.reference,
                 **example.graders[0].options) == 1.0
    row["grader"]["db"] = "missing.db"
    with pytest.raises(InputError, match="row 1: field 'grader': sql database 'missing.db' not found"):
        load_rft_dataset(write_jsonl(task_dir / "t2.jsonl", [row]))


def test_rft_rows_import_into_the_store_beside_preference_rows_and_read_back(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert labeling_main(["init", "--db", db, "--project", "mixed"]) == 0
    rft = write_jsonl(tmp_path / "rft.jsonl", ROWS[:2])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])
    assert labeling_main(["import", "--db", db, "--project", "mixed", "--file", str(rft)]) == 0
    assert labeling_main(["import", "--db", db, "--project", "mixed", "--file", str(prefs)]) == 0
    examples = load_rft_dataset(store=db, project="mixed")  # the preference prompt has no reference: skipped
    assert [e.reference for e in examples] == ["6", {"name": "Ada"}]
    assert [e.graders[0].name for e in examples] == ["math", "json_fields"]
    assert examples[1].meta == {"id": "x7"}


def test_an_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no RFT examples"):
        load_rft_dataset(write_jsonl(tmp_path / "empty.jsonl", []), grader="math")
