"""`labeling export` never removes or overwrites what it did not write.

Each refusal is one stderr line and a non-zero exit, and the user's files survive byte for
byte (compared by digest); a re-export replaces exactly the files an earlier export wrote.
"""

from __future__ import annotations

import json

import pytest
from state_helpers import tree_digest
from export_store import build_pairwise_store

from labeling.cli import main as labeling
from labeling.db import open_store
from labeling.export_files import read_card


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's directory: the store, a notes file and a folder of their own data."""
    engine = open_store(f"sqlite:///{tmp_path / 'prefloop.db'}")
    build_pairwise_store(engine)
    engine.dispose()
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "keep.csv").write_bytes(b"a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFLOOP_DB", raising=False)
    return tmp_path


def export(*args) -> list[str]:
    return ["export", "--store", "prefloop.db", "--project", "p", "--ties", "keep", *args]


@pytest.mark.parametrize("args,names", [
    (["--out", "mydata"], "mydata: already exists and is not the directory of an earlier export"),
    (["--out", "mydata", "--file-format", "jsonl"], "mydata: is a directory"),
    (["--out", "."], ".: already exists and is not the directory of an earlier export"),
    (["--out", "notes.txt", "--file-format", "jsonl"], "notes.txt: already exists and was not written"),
    (["--out", "mydata/keep.csv", "--file-format", "jsonl"], "keep.csv: already exists and was not written"),
], ids=["existing-dir", "dir-as-jsonl", "dot-beside-the-store", "user-file", "file-in-user-dir"])
def test_refuses_paths_it_did_not_create(workdir, capfd, args, names):
    before = tree_digest(workdir)
    assert labeling(export(*args)) != 0
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and names in err
    assert tree_digest(workdir) == before


def test_refuses_a_jsonl_whose_card_is_not_ours(workdir, capfd):
    (workdir / "prefs.jsonl").write_text('{"mine": 1}\n')
    (workdir / "prefs.card.md").write_text("# my own card\n")
    before = tree_digest(workdir)
    assert labeling(export("--out", "prefs.jsonl")) != 0
    assert "prefs.card.md: already exists and is not the card of an earlier export" in capfd.readouterr().err
    assert tree_digest(workdir) == before


def test_refuses_a_split_file_it_did_not_write(workdir, capfd):
    (workdir / "prefs.test.jsonl").write_text('{"mine": 1}\n')
    before = tree_digest(workdir)
    assert labeling(export("--out", "prefs.jsonl", "--test-fraction", "0.5")) != 0
    assert "prefs.test.jsonl: already exists and was not written" in capfd.readouterr().err
    assert tree_digest(workdir) == before


def test_re_export_replaces_only_its_own_files(workdir):
    assert labeling(export("--out", "out/prefs.jsonl")) == 0
    (workdir / "out" / "mine.txt").write_text("keep me\n")
    assert labeling(export("--out", "out/prefs.jsonl", "--min-agreement", "1.0")) == 0  # fewer rows now
    rows = [json.loads(line) for line in (workdir / "out" / "prefs.jsonl").read_text().splitlines()]
    assert rows and all(row["agreement"] == 1.0 for row in rows)
    assert read_card(workdir / "out" / "prefs.card.md")["options"]["min_agreement"] == 1.0
    assert (workdir / "out" / "mine.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["mine.txt", "prefs.card.md", "prefs.jsonl"]


def test_re_export_replaces_its_own_datasets_directory(workdir):
    assert labeling(export("--out", "ds")) == 0
    first = tree_digest(workdir / "ds")
    assert labeling(export("--out", "ds", "--test-fraction", "0.5", "--seed", "3")) == 0
    assert tree_digest(workdir / "ds") != first
    assert read_card(workdir / "ds" / "README.md")["options"]["test_fraction"] == 0.5
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    assert (workdir / "notes.txt").read_text() == "my notes\n"


def test_re_export_into_a_datasets_directory_keeps_the_files_a_user_added(workdir, capfd):
    from datasets import load_from_disk

    assert labeling(export("--out", "ds", "--test-fraction", "0.5")) == 0  # a DatasetDict: train/, test/
    (workdir / "ds" / "notes.md").write_text("mine\n")
    (workdir / "ds" / "train" / "mine.txt").write_text("also mine\n")
    assert labeling(export("--out", "ds", "--min-agreement", "1.0")) == 0  # one split now
    assert (workdir / "ds" / "notes.md").read_text() == "mine\n"
    assert (workdir / "ds" / "train" / "mine.txt").read_text() == "also mine\n"
    assert not (workdir / "ds" / "test").exists() and not (workdir / "ds" / "dataset_dict.json").exists()
    rows = load_from_disk(str(workdir / "ds"))
    assert len(rows) and all(row["agreement"] == 1.0 for row in rows)
    contents = read_card(workdir / "ds" / "README.md")["contents"]
    assert "README.md" in contents and "notes.md" not in contents and "train/mine.txt" not in contents

    # a user's file where the export would write one of its own: refused, nothing moved
    (workdir / "ds" / "train" / "mine.txt").unlink()
    (workdir / "ds" / "train" / "state.json").write_text("{}")
    before, _ = tree_digest(workdir), capfd.readouterr()
    assert labeling(export("--out", "ds", "--test-fraction", "0.5")) != 0
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "train/state.json: already exists and was not written" in err
    assert tree_digest(workdir) == before
