"""Export: aggregation, ties, gold exclusion, SFT selection, raw pseudonyms, splits, files and cards.

Store tests run on SQLite and on PostgreSQL (the `engine` fixture). The populated store
below is small enough to compute every expected row by hand (see `build_pairwise_store`).
"""

from __future__ import annotations

import json

import pytest

from labeling.export import export_dataset, export_records
from labeling.export_files import main, read_card, write_export
from prefloop.config import ConfigError
from prefloop.errors import InputError

from export_store import ANNOTATORS, add_store_rows, add_task, build_pairwise_store, judge


def text(turns):
    assert len(turns) == 1 and turns[0]["role"] == "assistant"
    return turns[0]["content"]


def by_task(rows):
    return {row["task_id"]: row for row in rows}


# --- pairwise aggregation ----------------------------------------------------------

def test_pairwise_majority_rows_match_hand_computed(engine):
    ids = build_pairwise_store(engine)
    splits, card = export_dataset(engine, "p")
    rows = by_task(splits["train"])
    t = ids["tasks"]
    assert set(rows) == {t[0], t[4], t[5]}  # tie, both_bad, split vote and gold are not exported
    r0 = rows[t[0]]
    assert r0["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question 0?"}]
    assert (text(r0["chosen"]), text(r0["rejected"])) == ("m-good answer 0", "m-bad answer 0")
    assert r0["margin"] == pytest.approx(4 / 3) and r0["agreement"] == 1.0 and r0["annotators"] == 3
    assert r0["tie"] is False and r0["prompt_id"] == ids["prompts"][0]
    r4 = rows[t[4]]
    assert text(r4["chosen"]) == "m-good answer 4" and r4["margin"] == 1.0
    assert r4["agreement"] == pytest.approx(2 / 3)
    assert text(rows[t[5]]["chosen"]) == "m-good answer 5" and rows[t[5]]["margin"] == 2.0
    assert card["counts"]["dropped"] == {"both_bad": 1, "no_majority": 1, "tie": 1}
    assert card["counts"]["gold_tasks"] == 1 and card["snapshot"]["judgments"] == 19


def test_min_agreement_and_kept_ties(engine):
    ids = build_pairwise_store(engine)
    t = ids["tasks"]
    strict = by_task(export_records(engine, "p", min_agreement=0.7))
    assert set(strict) == {t[0], t[5]}  # T4 (2/3) falls below 0.7
    kept = by_task(export_records(engine, "p", ties="keep"))
    assert set(kept) == {t[0], t[1], t[4], t[5]}
    tie = kept[t[1]]
    assert tie["tie"] is True and tie["margin"] == 0.0 and tie["agreement"] == pytest.approx(2 / 3)
    assert {text(tie["chosen"]), text(tie["rejected"])} == {"m-good answer 1", "m-bad answer 1"}
    # both_bad never becomes a pair, even when ties are kept
    assert t[2] not in kept


def test_gold_accuracy_threshold_and_named_exclusion(engine):
    ids = build_pairwise_store(engine)
    t = ids["tasks"]
    rows = by_task(export_records(engine, "p", min_gold_accuracy=0.5))  # dave got the gold task wrong
    assert set(rows) == {t[0], t[4]}  # T5 was dave's alone
    assert rows[t[4]]["agreement"] == 1.0 and rows[t[4]]["annotators"] == 2
    _, card = export_dataset(engine, "p", min_gold_accuracy=0.5)
    assert card["counts"]["annotators_excluded"] == 1 and card["agreement"]["mean_gold_accuracy"] == 0.75
    # alice out: T1 (bob tie, carol good) and T4 (bob good, dave bad) split; T3 is bob's bad win alone
    rows = by_task(export_records(engine, "p", exclude_annotators=["alice"]))
    assert set(rows) == {t[0], t[3], t[5]}
    assert text(rows[t[3]]["chosen"]) == "m-bad answer 3"
    with pytest.raises(InputError, match="no annotator named 'zoe'"):
        export_records(engine, "p", exclude_annotators=["zoe"])


def test_unaggregated_rows_one_per_decisive_judgment(memory_engine):
    ids = build_pairwise_store(memory_engine)
    rows = export_records(memory_engine, "p", aggregate="none")
    # decisive judgments outside the gold task: T0 x3, T1 carol, T2 carol, T3 x2, T4 x3, T5 x1
    assert len(rows) == 11 and all(r["annotators"] == 1 for r in rows)
    dave_t4 = [r for r in rows if r["task_id"] == ids["tasks"][4] and r["margin"] == 2.0]
    assert len(dave_t4) == 1 and text(dave_t4[0]["chosen"]) == "m-bad answer 4"
    assert dave_t4[0]["agreement"] == pytest.approx(1 / 3)


def test_ranking_rows_from_a_pairwise_project(memory_engine):
    ids = build_pairwise_store(memory_engine)
    rows = by_task(export_records(memory_engine, "p", fmt="ranking", ties="keep"))
    assert set(rows) == {ids["tasks"][0], ids["tasks"][4], ids["tasks"][5]}  # a tie has no order
    assert [text(r) for r in rows[ids["tasks"][4]]["responses"]] == ["m-good answer 4", "m-bad answer 4"]


def test_snapshot_cap_reproduces_an_earlier_export(memory_engine):
    ids = build_pairwise_store(memory_engine)
    _, card = export_dataset(memory_engine, "p")
    before = export_records(memory_engine, "p")
    t5 = ids["tasks"][5]
    judge(memory_engine, ids, t5, "alice", [ids["cands"][(5, "m-bad")], ids["cands"][(5, "m-good")]], "a_better")
    assert t5 not in by_task(export_records(memory_engine, "p"))  # now a split vote
    assert export_records(memory_engine, "p", until_judgment_id=card["snapshot"]["max_judgment_id"]) == before


# --- ranking projects --------------------------------------------------------------

def test_ranking_project_majority_borda_and_pairs(engine):
    ids = add_store_rows(engine, mode="ranking", k=3, prompts=2, models=("x", "y", "z"), name="p")
    x, y, z = (ids["cands"][(0, m)] for m in "xyz")
    task = add_task(engine, ids, 0, [x, y, z])
    judge(engine, ids, task, "alice", [x, y, z], ranking=[x, y, z])
    judge(engine, ids, task, "bob", [z, y, x], ranking=[x, y, z])
    judge(engine, ids, task, "carol", [y, z, x], ranking=[y, z, x])
    ranked = export_records(engine, "p", fmt="ranking")
    assert len(ranked) == 1
    assert [text(r) for r in ranked[0]["responses"]] == ["x answer 0", "y answer 0", "z answer 0"]
    # pair agreements of x>y, x>z, y>z: 2/3, 2/3, 3/3
    assert ranked[0]["agreement"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    pairs = export_records(engine, "p", fmt="pairwise")
    assert [(text(p["chosen"]), text(p["rejected"]), p["agreement"]) for p in pairs] == [
        ("x answer 0", "y answer 0", pytest.approx(2 / 3)), ("x answer 0", "z answer 0", pytest.approx(2 / 3)),
        ("y answer 0", "z answer 0", 1.0)]
    assert "margin" not in pairs[0]  # rankings carry no strength
    assert len(export_records(engine, "p", fmt="pairwise", min_agreement=0.9)) == 1
    # Borda: x 2+2+0 = 4, y 1+1+2 = 4, z 0+0+1 = 1: x and y tie on points, their pair is dropped
    borda = export_records(engine, "p", fmt="pairwise", aggregate="borda")
    assert sorted((text(p["chosen"]), text(p["rejected"])) for p in borda) == [
        ("x answer 0", "z answer 0"), ("y answer 0", "z answer 0")]
    # SFT: x is first for 2 of 3 annotators: clear only once the required share is at most 2/3
    assert export_records(engine, "p", fmt="sft") == []
    assert [text(r["completion"]) for r in export_records(engine, "p", fmt="sft", sft_min_agreement=0.6)] == [
        "x answer 0"]


def test_borda_needs_a_ranking_project(memory_engine):
    build_pairwise_store(memory_engine)
    with pytest.raises(InputError, match="Borda"):
        export_records(memory_engine, "p", aggregate="borda")


# --- sft and raw -------------------------------------------------------------------

def test_sft_edited_first_then_clear_winners(engine):
    ids = build_pairwise_store(engine)
    rows = export_records(engine, "p", fmt="sft")
    # edited (T2, a both_bad task), then T0 (unanimous among 3) and T5 (much better); not T4 (2/3)
    assert [(r["source"], text(r["completion"])) for r in rows] == [
        ("edited", "An ideal answer 2."), ("winner", "m-good answer 0"), ("winner", "m-good answer 5")]
    first = rows[0]
    assert first["messages"] == first["prompt"] + first["completion"]
    assert first["prompt_id"] == ids["prompts"][2]
    looser = export_records(engine, "p", fmt="sft", sft_min_agreement=0.6)
    assert "m-good answer 4" in [text(r["completion"]) for r in looser]


def test_raw_is_every_judgment_with_salted_pseudonyms(engine):
    ids = build_pairwise_store(engine)
    rows = export_records(engine, "p", fmt="raw", salt="s1")
    assert len(rows) == 19 and sum(r["gold"] for r in rows) == 4
    blob = json.dumps(rows)
    for name in ANNOTATORS:
        assert name not in blob
    assert "annotator_id" not in rows[0]
    by_judgment = {r["judgment_id"]: r for r in rows}
    first = by_judgment[min(by_judgment)]  # alice on T0
    assert first["choice"] == "a_much_better" and first["strength"] == 2 and first["ms_spent"] == 500
    assert first["display_order"] == [ids["cands"][(0, "m-good")], ids["cands"][(0, "m-bad")]]
    assert first["chosen"] == ids["cands"][(0, "m-good")]
    pseudonyms = {r["annotator"] for r in rows}
    assert len(pseudonyms) == 4  # one stable pseudonym per annotator
    assert {r["annotator"] for r in export_records(engine, "p", fmt="raw", salt="s1")} == pseudonyms
    assert not pseudonyms & {r["annotator"] for r in export_records(engine, "p", fmt="raw", salt="s2")}
    dave = [r for r in rows if r["gold"] and r["gold_correct"] is False]
    assert len(dave) == 1


# --- splits ------------------------------------------------------------------------

def test_split_by_prompt_is_disjoint_and_deterministic(memory_engine):
    ids = add_store_rows(memory_engine, prompts=40, overlap=1)
    for i in range(40):
        g, b = ids["cands"][(i, "m-good")], ids["cands"][(i, "m-bad")]
        for pair in ([g, b], [b, g]):  # two tasks per prompt: both must land on the same side
            judge(memory_engine, ids, add_task(memory_engine, ids, i, pair), "alice", pair, "a_better")
    splits, card = export_dataset(memory_engine, "p", test_fraction=0.25, seed=3)
    train = {r["prompt_id"] for r in splits["train"]}
    test = {r["prompt_id"] for r in splits["test"]}
    assert not train & test and train | test == set(ids["prompts"])
    assert 4 <= len(test) <= 18  # about a quarter of 40
    assert card["counts"]["splits"] == {"train": len(splits["train"]), "test": len(splits["test"])}
    again = export_records(memory_engine, "p", test_fraction=0.25, seed=3, split="test")
    assert again == splits["test"]
    other = {r["prompt_id"] for r in export_records(memory_engine, "p", test_fraction=0.25, seed=4, split="test")}
    assert other != test


# --- files, cards, command line ----------------------------------------------------

def test_write_export_files_and_card(memory_engine, tmp_path):
    build_pairwise_store(memory_engine)
    splits, card = export_dataset(memory_engine, "p", ties="keep")
    paths = write_export(splits, tmp_path / "prefs.jsonl", card=card)
    assert [p.name for p in paths] == ["prefs.jsonl", "prefs.card.md"]
    lines = (tmp_path / "prefs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == splits["train"]
    facts = read_card(tmp_path / "prefs.card.md")
    assert facts["counts"]["rows"] == 4 and facts["options"]["ties"] == "keep"
    assert facts["snapshot"]["max_judgment_id"] == card["snapshot"]["max_judgment_id"]
    assert facts["rounds"] == [1] and facts["models"] == ["m-bad", "m-good"] and facts["created_at"]
    assert facts["agreement"]["fleiss_kappa"] == card["agreement"]["fleiss_kappa"] is not None
    body = (tmp_path / "prefs.card.md").read_text()
    assert "# p: pairwise preference data" in body and "| train | 4 |" in body

    from datasets import DatasetDict, load_from_disk

    two = {"train": splits["train"][:3], "test": splits["train"][3:]}
    write_export(two, tmp_path / "ds", card=card)
    loaded = load_from_disk(str(tmp_path / "ds"))
    assert isinstance(loaded, DatasetDict) and loaded["train"].num_rows == 3 and loaded["test"].num_rows == 1
    assert read_card(tmp_path / "ds" / "README.md")["project"] == "p"
    write_export(two, tmp_path / "pq.parquet", card=card)
    assert sorted(p.name for p in tmp_path.glob("pq*")) == ["pq.card.md", "pq.test.parquet", "pq.train.parquet"]


def test_empty_export_writes_nothing(sqlite_url, tmp_path):
    from labeling.db import open_store

    engine = open_store(sqlite_url)
    add_store_rows(engine)  # prompts and candidates, no judgments
    engine.dispose()
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no pairwise rows"):
        main(["--store", sqlite_url, "--project", "p", "--out", str(out / "x.jsonl")])
    with pytest.raises(InputError, match="nothing to write"):
        write_export([], out / "y.jsonl")
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_exports_a_file_store(sqlite_url, tmp_path, capsys):
    from labeling.db import open_store

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    out = tmp_path / "out" / "prefs.parquet"
    assert main(["--store", sqlite_url, "--project", "p", "--out", str(out), "--ties", "keep",
                 "--test-fraction", "0.5", "--seed", "1"]) == 0
    assert "exported 4 pairwise rows" in capsys.readouterr().out
    from prefloop.data import read_records

    rows = read_records(out.with_name("prefs.train.parquet")) + read_records(out.with_name("prefs.test.parquet"))
    assert len(rows) == 4 and {"prompt", "chosen", "rejected", "margin", "tie"} <= set(rows[0])
    with pytest.raises(ConfigError, match="min_agreement"):
        main(["--store", sqlite_url, "--project", "p", "--out", str(out), "--min-agreement", "1.5"])
    with pytest.raises(LookupError, match="nope"):
        main(["--store", sqlite_url, "--project", "nope", "--out", str(out)])
