"""`labeling import`: every format, validation before any write, dedupe on re-import."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func
from sqlmodel import select

from labeling.db import session_scope
from labeling.importer import import_file
from labeling.models import Candidate, Prompt
from labeling.projects import create_project
from prefloop.data import write_records
from prefloop.errors import InputError

GOOD = [
    {"prompt": "What is 2+2?"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
     "responses": [{"text": "Blue.", "model": "m1"}, {"text": "Red.", "model": "m2"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "How are you?"}], "response": "Fine.", "model": "m1", "split": "test"},
    {"text": "Translate 'cat' to French.", "topic": "translation"},
]


def counts(engine):
    with session_scope(engine) as s:
        return (s.exec(select(func.count()).select_from(Prompt)).one(),
                s.exec(select(func.count()).select_from(Candidate)).one())


@pytest.fixture
def project_engine(engine):
    with session_scope(engine) as s:
        create_project(s, "p")
    return engine


def _tabular(rows):
    """Columnar formats need one type per column: every prompt as a conversation."""
    out = []
    for row in rows:
        row = dict(row)
        text = row.pop("prompt", None) or row.pop("text", None)
        if isinstance(text, str):
            row["prompt"] = [{"role": "user", "content": text}]
        elif text is not None:
            row["prompt"] = text
        if "messages" in row:
            row["prompt"] = row.pop("messages")
        out.append(row)
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ""])
def test_every_format_imports_prompts_and_responses(project_engine, tmp_path, suffix):
    rows = GOOD if suffix in (".jsonl", ".csv") else _tabular(GOOD)
    path = write_records(rows, tmp_path / f"in{suffix}")
    report = import_file(project_engine, "p", path)
    assert (report.prompts_added, report.candidates_added) == (4, 3)
    with session_scope(project_engine) as s:
        multi = s.exec(select(Prompt).where(Prompt.split == "test")).one()
        assert [m["role"] for m in multi.messages] == ["user", "assistant", "user"]
        translated = [p for p in s.exec(select(Prompt)) if p.meta and p.meta.get("topic") == "translation"]
        assert len(translated) == 1


def test_reimport_adds_nothing(project_engine, tmp_path):
    path = write_records(GOOD, tmp_path / "in.jsonl")
    import_file(project_engine, "p", path)
    report = import_file(project_engine, "p", path)
    assert (report.prompts_added, report.candidates_added, report.prompts_existing) == (0, 0, 4)
    assert counts(project_engine) == (4, 3)


def test_trl_preference_rows_become_candidates(project_engine, tmp_path):
    row = {"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    import_file(project_engine, "p", write_records([row], tmp_path / "pref.jsonl"))
    with session_scope(project_engine) as s:
        assert sorted(c.text for c in s.exec(select(Candidate))) == ["bad", "good"]


@pytest.mark.parametrize("bad_row, field", [
    ({"answer": "no prompt column"}, "missing prompt"),
    ({"prompt": [{"role": "robot", "content": "hi"}]}, "prompt[0].role"),
    ({"prompt": [{"role": "user"}]}, "prompt[0]"),
    ({"prompt": "x" * 40_000}, "40000 characters"),
    ({"prompt": "ok", "responses": "not a list"}, "field 'responses'"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message must be from the user"),
])
def test_one_bad_row_leaves_the_store_unchanged(project_engine, tmp_path, bad_row, field):
    import_file(project_engine, "p", write_records(GOOD[:1], tmp_path / "first.jsonl"))
    before = counts(project_engine)
    rows = GOOD[1:] + [bad_row] + [{"prompt": "after the bad row"}]
    path = write_records(rows, tmp_path / "mixed.jsonl")
    with pytest.raises(InputError) as err:
        import_file(project_engine, "p", path)
    message = str(err.value)
    assert "mixed.jsonl: row 4:" in message and field in message and "\n" not in message
    assert counts(project_engine) == before


def test_malformed_json_and_csv_rows_are_named(project_engine, tmp_path):
    from prefloop.data import DataFileError

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps({"prompt": "ok"}) + "\n{not json\n")
    with pytest.raises(DataFileError, match=r"bad.jsonl: row 2: not valid JSON"):
        import_file(project_engine, "p", bad_json)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("prompt\nfine\n\"unterminated,extra\",x\n")
    with pytest.raises((DataFileError, InputError), match=r"bad.csv: row 3"):
        import_file(project_engine, "p", bad_csv)
    assert counts(project_engine) == (0, 0)


def test_unknown_project_is_one_line(memory_engine, tmp_path):
    with pytest.raises(LookupError, match="project 'nope' does not exist"):
        import_file(memory_engine, "nope", write_records(GOOD, tmp_path / "in.jsonl"))
