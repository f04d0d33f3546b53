"""align.prompts: prompts from JSONL / Parquet / datasets files and from the preference store."""

import json

import pytest

from align.prompts import as_conversation, load_prompts
from prefloop.data import write_records
from prefloop.errors import InputError

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
ROWS = [
    {"prompt": CONV, "chosen": [{"role": "assistant", "content": "Blue."}], "rejected": [], "prompt_id": 1},
    {"prompt": "Once upon a time"},
    {"messages": CONV + [{"role": "assistant", "content": "Red."}]},
    {"text": "Plain text prompt"},
]


@pytest.mark.parametrize("suffix", ["prompts.jsonl", "prompts.parquet", "prompts_ds"])
def test_every_column_kind_loads_from_every_file_kind(tmp_path, suffix):
    # Parquet and datasets need one type per column: there, conversations only.
    rows = ROWS if suffix.endswith(".jsonl") else [ROWS[0], ROWS[2]]
    path = write_records(rows, tmp_path / suffix)
    prompts, source = load_prompts(path)
    if suffix.endswith(".jsonl"):
        # prompt conversation as is; prompt string as is; messages minus the assistant's answer; text
        assert prompts == [CONV, "Once upon a time", CONV, "Plain text prompt"]
    else:
        assert prompts == [CONV, CONV]
    assert source["kind"] == "file" and source["num_prompts"] == len(prompts)
    assert as_conversation("hi") == [{"role": "user", "content": "hi"}]


def test_limit_keeps_the_first_prompts(tmp_path):
    path = write_records(ROWS, tmp_path / "p.jsonl")
    prompts, source = load_prompts(path, limit=2)
    assert prompts == [CONV, "Once upon a time"] and source["num_prompts"] == 2


@pytest.mark.parametrize("row,message", [
    ({"question": "hi"}, "row 2: no 'prompt', 'messages', 'text' field"),
    ({"prompt": [{"role": "user"}]}, "row 2: field 'prompt': message 0: expected"),
    ({"prompt": []}, "row 2: field 'prompt': expected a conversation"),
    ({"text": "   "}, "row 2: field 'text': expected a non-empty string"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "row 2: field 'messages': no turn left"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as err:
        load_prompts(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_or_missing_file_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no prompts found"):
        load_prompts(empty)
    from prefloop.data import DataFileError

    with pytest.raises(DataFileError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")


def test_prompts_from_the_store_with_a_snapshot(sqlite_url, tmp_path):
    from labeling.db import open_store
    from labeling.importer import import_file
    from labeling.db import session_scope
    from labeling.projects import create_project

    engine = open_store(sqlite_url)
    with session_scope(engine) as session:
        create_project(session, "demo")
    data = tmp_path / "import.jsonl"
    write_records([{"prompt": CONV, "responses": ["Blue.", "Red."]},
                   {"prompt": [{"role": "user", "content": "Say hi."}], "responses": ["Hi!", "Hello."]}], data)
    import_file(engine, "demo", data)
    engine.dispose()
    prompts, source = load_prompts(store=sqlite_url, project="demo")
    assert prompts == [CONV, [{"role": "user", "content": "Say hi."}]]
    assert source["kind"] == "store" and source["project"] == "demo" and source["num_judgments"] == 0
    assert "snapshot_time" in source and source["max_judgment_id"] is None
    with pytest.raises(LookupError, match="'nope'"):
        load_prompts(store=sqlite_url, project="nope")
