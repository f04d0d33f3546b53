"""Arena judgments are ordinary data: stats, the leaderboard and `reward-model train --store` take them unchanged."""

from __future__ import annotations

import json

import pytest

from _labeling_seed import seed_users
from labeling import arena
from labeling.answers import submit_judgment
from labeling.arena_backends import Backends
from labeling.arena_pool import Battle, GenerationPool
from labeling.db import open_store
from labeling.leaderboard import leaderboard
from labeling.stats import project_stats
from prefloop.data import read_records
from reward_model.cli import main as reward_model

pytestmark = pytest.mark.usefixtures("tiny_cpu")
PROMPTS = ["Name a fruit.", "Say hello.", "Count to three.", "Pick a colour."]


def test_arena_votes_train_a_reward_model(tmp_path, sqlite_url, tiny_model_dir):
    engine = open_store(sqlite_url)
    settings = arena.create_arena(engine, "arena", [f"left={tiny_model_dir}", f"right={tiny_model_dir}"],
                                  max_new_tokens=8)
    uid = seed_users(engine, ["ann"])["ann"]
    pool, backends = GenerationPool(2), Backends()
    chosen_texts = set()
    for i, prompt in enumerate(PROMPTS):
        battle = Battle.start(pool, backends, settings, prompt, *arena.pick_pair(settings))
        while not battle.done:
            battle.wait(0.05)
        answers = battle.answers()
        lease = arena.store_battle(engine, "arena", uid, prompt, *answers, settings)
        choice = "a_better" if i % 2 == 0 else "b_much_better"
        submit_judgment(engine, assignment_id=lease.id, annotator_id=uid, client_request_id=f"arena-{i}",
                               choice=choice)
        chosen_texts.add(answers[0 if i % 2 == 0 else 1].text.strip())

    stats = project_stats(engine, "arena")
    board = {row["model"]: row for row in leaderboard(engine, "arena")}
    assert stats["judgments"] == 4 and set(board) == {"left", "right"}
    assert sum(row["games"] for row in board.values()) == 8  # 4 games, each counted for both models
    engine.dispose()

    out = tmp_path / "rm"
    assert reward_model(["train", "--store", sqlite_url, "--project", "arena", "--model", tiny_model_dir,
                         "--output-dir", str(out), "--max-steps", "2", "--per-device-train-batch-size", "2"]) == 0
    snapshot = json.loads((out / "final" / "reward_model.json").read_text())["data"]["store_snapshot"]
    assert snapshot["project"] == "arena" and snapshot["records"] == 4 and snapshot["judgments"] == 4
    rows = [r for split in ("train", "test") if (out / "data" / f"{split}.jsonl").exists()
            for r in read_records(out / "data" / f"{split}.jsonl")]
    assert {r["chosen"][-1]["content"] for r in rows} == chosen_texts
    assert {r["prompt"][-1]["content"] for r in rows} == set(PROMPTS)
