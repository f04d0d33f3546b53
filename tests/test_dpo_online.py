"""`align online-dpo`: sample N responses, score with a known reward, best vs worst, DPO update.

The policy is the PPO tests' tiny letter model (a random Llama over 8 letters + specials), whose
random policy explores every letter; the reward is the share of the letter "a" in the response
(`ppo_helpers.letter_a_reward`, loaded as "module:function" exactly as a user would).
"""

from __future__ import annotations

import json

import pytest
import torch

from align.onpolicy.online_dpo_config import OnlineDPOConfig
from align.onpolicy.online_dpo_trainer import best_worst_pairs, train_online
from dpo_helpers import load_weights, write_jsonl
from ppo_helpers import build_letter_model
from prefloop.config import parse_config
from prefloop.data import read_records
from prefloop.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)

REWARD = "ppo_helpers:letter_a_reward"


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory):
    return str(build_letter_model(tmp_path_factory.mktemp("letters") / "lm", seed=0))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    """24 training prompts and, as `labeling export --test-fraction` writes it, 8 held-out ones beside them."""
    words = [f"{a} {b}" for a in "abcdefgh" for b in "hgfedcba"][::2]  # 32 distinct two-letter prompts
    rows = [{"prompt": [{"role": "user", "content": w}]} for w in words]
    root = tmp_path_factory.mktemp("prompts")
    write_jsonl(rows[::4], root / "prompts.test.jsonl")
    return write_jsonl([row for i, row in enumerate(rows) if i % 4], root / "prompts.train.jsonl")


def _cfg(model, prompts, out, *extra) -> OnlineDPOConfig:
    return parse_config(OnlineDPOConfig, ["--model", model, "--prompts", str(prompts), "--reward-model", REWARD,
                                          "--output-dir", str(out), "--num-generations", "4", "--batch-size", "8",
                                          "--max-new-tokens", "4", "--learning-rate", "2e-3", "--beta", "0.1",
                                          "--min-reward-gap", "0.1", "--save-steps", "100", *extra])


def test_best_worst_pairs_skip_near_ties():
    rewards = torch.tensor([[0.1, 0.9, 0.5], [0.30, 0.31, 0.30], [2.0, -1.0, 0.0]])  # (P=3, N=3)
    pairs, gaps = best_worst_pairs(rewards, min_gap=0.05)
    # prompt 0: best column 1, worst 0 -> rows 1, 0; prompt 1 is a near-tie; prompt 2: rows 6, 7
    assert pairs.tolist() == [[1, 0], [6, 7]]
    assert gaps.tolist() == pytest.approx([0.8, 3.0])


def test_online_dpo_raises_the_reward_on_held_out_prompts(letter_model, prompts_file, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "online"
    final = train_online(_cfg(letter_model, prompts_file, out, "--max-steps", "15"))

    base, trained = load_weights(letter_model), load_weights(final)  # plain transformers loads it
    assert all(not torch.equal(base[k], trained[k]) for k in base)
    meta = json.loads((out / "run.json").read_text())
    before, after = meta["eval_before"], meta["eval_after"]
    print(f"\nheld-out: reward {before['reward']:.3f} -> {after['reward']:.3f}, "
          f"accuracy {before.get('accuracy')} -> {after.get('accuracy')}, KL {before['kl']:.3f} -> {after['kl']:.3f}")
    assert after["reward"] > before["reward"] + 0.15  # the policy writes more "a"s on prompts it never trained on
    assert before.get("accuracy", 0.0) == 0.0 and after["accuracy"] >= 0.7  # implicit reward agrees with r
    assert before["kl"] == pytest.approx(0.0, abs=1e-5) and after["kl"] > 0.05
    logged = read_metrics(out)
    train_rows = [row for row in logged if row["step"] >= 1]
    assert [row["step"] for row in train_rows] == list(range(1, 16))
    assert {"loss", "rewards/accuracies", "rewards/margins", "pairs", "skipped_ties"} <= set(train_rows[-1])
    assert (out / "tensorboard").is_dir()
    assert meta["prompts"]["kind"] == "file" and meta["reward_model"] == REWARD


def test_online_dpo_resume_reproduces_the_uninterrupted_run(letter_model, prompts_file, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "resume"
    no_held_out = write_jsonl(read_records(prompts_file), tmp_path / "prompts.jsonl")  # no .test companion
    cfg = _cfg(letter_model, no_held_out, out, "--max-steps", "4", "--save-steps", "2")
    uninterrupted = load_weights(train_online(cfg))
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    import shutil

    shutil.rmtree(out / "final")
    resumed = load_weights(train_online(_cfg(letter_model, no_held_out, out, "--max-steps", "4",
                                             "--save-steps", "2", "--resume")))
    for name, value in uninterrupted.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name
    steps = [row["step"] for row in read_metrics(out) if "reward" in row]
    assert steps == [1, 2, 3, 4]  # the second run redid steps 3 and 4, logged once each


def test_online_dpo_with_lora_ipo_and_a_reward_model_dir(letter_model, prompts_file, tmp_path):
    from reward_model.testing import build_tiny_reward_model

    rm_dir = str(build_tiny_reward_model(tmp_path / "rm"))  # scored by the RewardScorer, as in production
    torch.manual_seed(0)
    cfg = _cfg(letter_model, prompts_file, tmp_path / "lora", "--max-steps", "3", "--lora", "--lora-r", "4",
               "--loss-type", "ipo", "--reward-model", rm_dir)
    final = train_online(cfg)
    meta = json.loads((tmp_path / "lora" / "run.json").read_text())
    assert meta["reward_model"] == rm_dir
    assert [row["pairs"] for row in read_metrics(tmp_path / "lora") if row["step"] >= 1] != [0, 0, 0]
    assert meta["eval_after"]["kl"] > 0  # against the adapter-disabled base
    base, trained = load_weights(letter_model), load_weights(final)
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"],
                           trained["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(base["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])


def test_online_bad_reward_is_one_line(letter_model, prompts_file, tmp_path, capsys):
    from align.cli import main

    argv = ["online-dpo", "--model", letter_model, "--prompts", str(prompts_file), "--output-dir",
            str(tmp_path / "bad"), "--max-steps", "1", "--max-new-tokens", "2"]
    assert main(argv + ["--reward-model", "ppo_helpers:no_such_reward"]) == 1
    assert "cannot import" in capsys.readouterr().err
    assert main(argv + ["--reward-model", "ppo_helpers:wrong_count_reward"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "align: error: reward ppo_helpers:wrong_count_reward: expected one number per response, got [] " \
                  "for 1 response"
    assert not (tmp_path / "bad").exists()  # nothing half-written
