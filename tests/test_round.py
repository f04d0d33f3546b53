"""Two rounds of the loop on a tiny model, from YAML, with simulated annotators labeling over HTTP
through a real server: the lineage records, and round 2's policy against round 1's on the gold reward."""

from __future__ import annotations

import json

import pytest
import yaml

from _labeling_seed import PASSWORD
from labeling.db import open_store, session_scope
from labeling.lineage import lineage
from labeling.projects import create_project


def gold_chars(prompts, responses) -> list[float]:
    """The test's gold reward: characters per response. A randomly initialised model cannot stop
    (EOS is one token in 49k), so every answer has the same number of tokens; longer tokens are better."""
    return [float(len(r if isinstance(r, str) else r[0]["content"])) for r in responses]


def _prompts(path, topics):
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {t}."}) + "\n" for t in topics))
    return str(path)


@pytest.fixture
def round_yaml(tmp_path, tiny_model_dir):
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    engine = open_store(db)
    with session_scope(engine) as s:
        create_project(s, "loop", overlap=1)
    engine.dispose()
    cfg = {
        "project": "loop", "db": db, "output_dir": str(tmp_path / "runs"), "reference": tiny_model_dir,
        "prompts": _prompts(tmp_path / "train.jsonl", ["cats", "rain", "tea", "chess", "bread", "stars", "maps",
                                                       "owls", "salt", "snow"]),
        "eval_prompts": _prompts(tmp_path / "heldout.jsonl", ["bees", "ships", "lamps", "boots"]),
        "gold": "test_round:gold_chars", "n": 2, "max_new_tokens": 8, "pairs_per_prompt": 1,
        "simulate": {"annotators": ["sim-a", "sim-b"], "temperature": [0.0], "password_env": "LOOP_SIM_PW"},
        "reward_model": {"model": tiny_model_dir, "max_steps": 4, "eval_fraction": 0.2, "learning_rate": 1e-3,
                         "per_device_train_batch_size": 4, "normalize_samples": 8},
        "algorithm": "dpo",
        "align": {"max_steps": 12, "batch_size": 4, "learning_rate": 5e-3, "beta": 0.1, "eval_fraction": 0.0,
                  "logging_steps": 1, "save_steps": 1000},
        "evaluate": {"max_new_tokens": 8, "samples_per_prompt": 4, "best_of": [1, 2]},
    }
    path = tmp_path / "round.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, db


def test_two_rounds_record_their_lineage_and_round_two_improves_on_the_gold(round_yaml, monkeypatch, capsys):
    from align.round import main
    from labeling.stats import main as stats_main

    path, db = round_yaml
    monkeypatch.setenv("LOOP_SIM_PW", PASSWORD)
    assert main(["--config", str(path)]) == 0
    assert main(["--config", str(path)]) == 0
    capsys.readouterr()

    engine = open_store(db)
    try:
        records = lineage(engine, "loop")
    finally:
        engine.dispose()
    kinds = [(r["round"], r["kind"]) for r in records]
    assert kinds == [(0, "policy")] + [(r, k) for r in (1, 2) for k in
                                      ("candidates", "export", "reward_model", "policy", "evaluation")]
    by_id = {r["id"]: r for r in records}
    reference, p1, p2 = (r for r in records if r["kind"] == "policy")
    assert p1["name"].endswith("round-1/policy/final") and p2["name"].endswith("round-2/policy/final")
    # round 2 starts from round 1's policy, on data that includes round 2's candidates of both models
    assert p2["parents"][0] == p1["id"] and p1["parents"][0] == reference["id"]
    candidates2 = next(r for r in records if r["kind"] == "candidates" and r["round"] == 2)
    assert candidates2["parents"] == [p1["id"]] and candidates2["details"]["models"] == [p1["name"],
                                                                                         reference["name"]]
    export2 = by_id[p2["parents"][2]]
    assert export2["details"]["rounds"] == [1, 2] and export2["details"]["snapshot"]["judgments"] > 0
    assert by_id[p2["parents"][1]]["kind"] == "reward_model"

    # the store's judgments came over HTTP from the two simulated accounts, and stats shows the lineage
    assert stats_main(["--db", db, "--project", "loop"]) == 0
    text = capsys.readouterr().out
    assert "sim-a" in text and "lineage:" in text and "round 2" in text

    evals = [r for r in records if r["kind"] == "evaluation"]
    gold1, gold2 = (e["details"]["mean_gold"] for e in evals)
    print(f"mean gold (characters): round 1 {gold1:.1f}, round 2 {gold2:.1f}")
    assert gold2 > gold1
