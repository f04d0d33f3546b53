"""`reward-model train / eval / score` end to end on the tiny model, with synthetic Bradley-Terry data.

The synthetic reward counts positive minus negative words in the response (reward_model.synthetic),
labels are drawn with Bradley-Terry noise, so the held-out accuracy has a known ceiling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefloop.data import read_records, write_records
from prefloop.metrics import read_metrics
from reward_model.cli import main as cli
from reward_model.synthetic import make_synthetic_comparisons

TRAIN_FLAGS = ["--learning-rate", "3e-3", "--per-device-train-batch-size", "16", "--num-train-epochs", "2",
               "--eval-steps", "25", "--logging-steps", "5", "--save-steps", "1000",
               "--seed", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """One training run on 600 synthetic comparisons (~360 train / ~240 held out), then `reward-model eval`.

    In fp32 on every machine, so that the accuracy bounds below mean the same on CI machines with and
    without bf16 units. Under bf16 autocast this run's true-order agreement is 0.84 against 0.93 in fp32
    (AVX512-BF16 CPU, same data and seed): a precision loss in reward-model training, open in issue 24."""
    from prefloop import hardware

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFLOOP_CPU_BF16", "0")
        hardware.detect.cache_clear()
        try:
            yield _train_and_eval(tmp_path_factory, tiny_model_dir)
        finally:
            hardware.detect.cache_clear()


def _train_and_eval(tmp_path_factory, tiny_model_dir):
    from prefloop.data import split_by_key

    root = tmp_path_factory.mktemp("rm-train")
    # what `labeling export --test-fraction 0.4` writes: the train file and its test companion, split by prompt
    train, test = split_by_key(make_synthetic_comparisons(600, seed=0), lambda r: r["prompt_id"], 0.4, seed=42)
    write_records(train, root / "pairs.train.jsonl")
    write_records(test, root / "pairs.test.jsonl")
    run_dir = root / "rm"
    assert cli(["train", "--data", str(root / "pairs.train.jsonl"), "--model", tiny_model_dir,
                "--output-dir", str(run_dir), *TRAIN_FLAGS]) == 0
    assert cli(["eval", "--model", str(run_dir)]) == 0  # the run directory stands for its final/ model
    return {"root": root, "run": run_dir, "out": run_dir / "final",
            "eval": json.loads((run_dir / "eval" / "metrics.json").read_text())}


def test_held_out_accuracy_near_the_bayes_ceiling(run):
    result = run["eval"]
    print(f"\nheld-out accuracy {result['accuracy']:.3f} vs Bayes-optimal ceiling {result['bayes_ceiling']:.3f} "
          f"(true-order agreement {result['true_order_accuracy']:.3f}, {result['pairs']} pairs)")
    assert 0.75 < result["bayes_ceiling"] < 0.85  # what the noise allows on these pairs
    assert result["accuracy"] >= result["bayes_ceiling"] - 0.08  # 2.5 standard errors on ~240 pairs
    assert result["true_order_accuracy"] >= 0.85  # it ranks by the true reward, not by chance
    # calibration and plots were produced; the learning curve rose with more training pairs
    assert 0 <= result["ece"] < 0.15
    for name in ("reliability.png", "reward_distribution.png", "learning_curve.png"):
        assert (run["run"] / "eval" / name).read_bytes()[:4] == b"\x89PNG"
    curve = result["learning_curve"]
    assert len(curve) >= 2 and curve[-1]["comparisons_seen"] > curve[0]["comparisons_seen"]
    assert curve[-1]["eval_accuracy"] > 0.65


def test_parameters_changed_and_loss_fell(run, tiny_model_dir):
    from safetensors.torch import load_file

    from reward_model.backbone import load_backbone

    initial, _ = load_backbone(tiny_model_dir, n_heads=1, seed=0)  # same seed: the same initial head
    trained = load_file(run["out"] / "model.safetensors")
    before = initial.state_dict()
    assert not torch.allclose(before["score.weight"], trained["score.weight"])
    assert not torch.allclose(before["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])
    losses = [row["loss"] for row in read_metrics(run["run"]) if "loss" in row]
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05
    assert (run["run"] / "tensorboard").is_dir()


def test_same_scores_through_reward_scorer_and_plain_transformers(run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward_model.scorer import RewardScorer

    rows = read_records(run["run"] / "data" / "eval.jsonl")[:6]
    prompts, responses = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    ours = RewardScorer.from_pretrained(run["out"], dtype=torch.float32).score(prompts, responses)
    model = AutoModelForSequenceClassification.from_pretrained(run["out"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(run["out"])
    offset, scale = model.config.reward_offset[0], model.config.reward_scale[0]
    plain = []
    for prompt, response in zip(prompts, responses):
        inputs = tokenizer.apply_chat_template(prompt + response, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            plain.append((model(**inputs).logits[0, 0].item() - offset) / scale)
    assert ours == pytest.approx(plain, abs=1e-4)
    assert max(plain) - min(plain) > 0.1  # not a constant model


def test_rewards_normalised_on_the_reference_sample(run):
    from reward_model.data import groups_from_records
    from reward_model.reward_trainer import reference_sample
    from reward_model.scorer import RewardScorer

    meta = json.loads((run["out"] / "reward_model.json").read_text())
    groups = groups_from_records(read_records(run["run"] / "data" / "train.jsonl"), "train")
    prompts, responses = reference_sample(groups, meta["config"]["normalize_samples"], meta["config"]["seed"])
    scores = torch.tensor(RewardScorer.from_pretrained(run["out"], dtype=torch.float32).score(prompts, responses))
    assert abs(scores.mean().item()) < 1e-3
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    assert meta["reward_scale"][0] != 1.0  # the raw scale was not already 1


def test_metadata_records_data_config_and_hardware(run):
    meta = json.loads((run["out"] / "reward_model.json").read_text())
    assert meta["data"]["file"].endswith("pairs.train.jsonl")
    assert meta["data"]["eval_file"].endswith("pairs.test.jsonl")  # the export's split, not a second one
    assert meta["data"]["n_train"] == len(read_records(run["run"] / "data" / "train.jsonl"))
    assert meta["data"]["n_train"] + meta["data"]["n_eval"] == 600
    train_prompts = {r["prompt_id"] for r in read_records(run["run"] / "data" / "train.jsonl")}
    eval_prompts = {r["prompt_id"] for r in read_records(run["run"] / "data" / "eval.jsonl")}
    assert not train_prompts & eval_prompts  # split by prompt
    assert meta["config"]["learning_rate"] == 3e-3 and meta["n_heads"] == 1
    assert "precision" in meta["hardware"]
    assert meta["metrics"]["eval_accuracy"] > 0.6


def test_score_command_jsonl_in_jsonl_out(run):
    from reward_model.scorer import RewardScorer

    rows = [{"id": i, "prompt": f"Tell me about tea ({i}).", "response": text}
            for i, text in enumerate(["great great clear kind", "bad wrong rude vague", "the answer is here"])]
    write_records(rows, run["root"] / "to_score.jsonl")
    assert cli(["score", "--model", str(run["out"]), "--input", str(run["root"] / "to_score.jsonl"),
                "--output", str(run["root"] / "scored.jsonl")]) == 0
    scored = read_records(run["root"] / "scored.jsonl")
    assert [r["id"] for r in scored] == [0, 1, 2]
    expected = RewardScorer.from_pretrained(run["out"]).score([r["prompt"] for r in rows], [r["response"] for r in rows])
    assert [r["reward"] for r in scored] == pytest.approx(expected, abs=1e-5)
    assert scored[0]["reward"] > scored[2]["reward"] > scored[1]["reward"]  # it learned the word feature


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model_dir, capsys):
    write_records(make_synthetic_comparisons(48, seed=1), tmp_path / "pairs.jsonl")
    args = ["train", "--data", str(tmp_path / "pairs.jsonl"), "--model", tiny_model_dir, "--output-dir",
            str(tmp_path / "rm"), "--per-device-train-batch-size", "8", "--save-steps", "2", "--logging-steps", "1",
            "--learning-rate", "1e-3", "--normalize-samples", "16"]
    assert cli([*args, "--max-steps", "4"]) == 0  # as if interrupted after step 4
    assert (tmp_path / "rm" / "checkpoints" / "checkpoint-4").is_dir()
    assert cli([*args, "--max-steps", "6"]) == 1  # without --resume an existing run is refused
    assert "pass --resume" in capsys.readouterr().err
    assert cli([*args, "--max-steps", "6", "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    state = json.loads((tmp_path / "rm" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [row["step"] for row in read_metrics(tmp_path / "rm") if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]  # the second run did steps 5-6 only


def test_ensemble_lora_rankings_ties_and_margins(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from reward_model.scorer import RewardScorer

    rows = make_synthetic_comparisons(24, seed=2)
    for i, row in enumerate(rows):
        row["margin"] = float(i % 3)  # judged strengths 0..2
        row["tie"] = i % 6 == 0
    rows += [{"prompt": "Rank these.", "prompt_id": 100 + i, "responses": [
        [{"role": "assistant", "content": "great kind"}], [{"role": "assistant", "content": "the answer"}],
        [{"role": "assistant", "content": f"bad rude {i}"}]]} for i in range(12)]
    write_records(rows, tmp_path / "mixed.jsonl")
    out = tmp_path / "rm"
    assert cli(["train", "--data", str(tmp_path / "mixed.jsonl"), "--model", tiny_model_dir, "--output-dir",
                str(out), "--n-heads", "3", "--lora", "--lora-r", "4", "--max-steps", "4", "--learning-rate", "1e-2",
                "--per-device-train-batch-size", "8", "--center-rewards-coefficient",
                "0.01", "--ranking-loss", "plackett_luce"]) == 0
    meta = json.loads((out / "final" / "reward_model.json").read_text())
    assert meta["n_heads"] == 3 and meta["data"]["n_rankings"] == 12 and meta["data"]["n_ties"] == 4
    weights = load_file(out / "final" / "model.safetensors")
    assert not any("lora" in key for key in weights)  # adapters merged: plain transformers loads it
    assert weights["score.weight"].shape[0] == 3
    scorer = RewardScorer.from_pretrained(out, dtype=torch.float32)
    means, stds = scorer.score_with_std(["Rank these."] * 2, ["great kind", "bad rude"])
    assert min(stds) > 0  # heads disagree
    assert means[0] > means[1]  # rankings taught the order
    write_records([{"prompt": "Rank these.", "response": "great kind"}], tmp_path / "in.jsonl")
    assert cli(["score", "--model", str(out), "--input", str(tmp_path / "in.jsonl"), "--output",
                str(tmp_path / "out.jsonl")]) == 0
    assert read_records(tmp_path / "out.jsonl")[0]["reward_std"] > 0  # the ensemble's spread per row


def test_encoder_backbone(tmp_path):
    from transformers import BertConfig, BertModel

    from prefloop.models import load_tokenizer
    from reward_model.scorer import RewardScorer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    write_records(make_synthetic_comparisons(32, seed=3), tmp_path / "pairs.jsonl")
    assert cli(["train", "--data", str(tmp_path / "pairs.jsonl"), "--model", str(tmp_path / "bert"),
                "--output-dir", str(tmp_path / "rm"), "--max-steps", "3", "--learning-rate", "1e-3"]) == 0
    meta = json.loads((tmp_path / "rm" / "final" / "reward_model.json").read_text())
    assert meta["max_length"] == 256  # capped at the encoder's positions
    scores = RewardScorer.from_pretrained(tmp_path / "rm", dtype=torch.float32).score(["hi", "hi"], ["great", "bad"])
    assert len(scores) == 2 and scores[0] != scores[1]


@pytest.mark.parametrize("content, message", [
    ("", "no comparisons (empty dataset)"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "tie": true}\n', "one-class data: all 1 comparisons are ties"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"}\n',
     "row 2: expected fields 'chosen' and 'rejected'"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}\n', "row 1: field 'margin' must be a number"),
])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    rc = cli(["train", "--data", str(tmp_path / "bad.jsonl"), "--model", "unused", "--output-dir",
              str(tmp_path / "rm")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rm").exists()


def test_bad_model_path_writes_nothing(tmp_path, capsys):
    write_records(make_synthetic_comparisons(4, seed=4), tmp_path / "pairs.jsonl")
    rc = cli(["train", "--data", str(tmp_path / "pairs.jsonl"), "--model", str(tmp_path / "no-model"),
              "--output-dir", str(tmp_path / "rm")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "no such directory" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rm").exists()


def test_train_from_the_store_records_the_snapshot(tmp_path, sqlite_url, tiny_model_dir):
    from labeling.db import open_store
    from export_store import build_pairwise_store  # the hand-checked store (tests/ is on sys.path)

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)  # 3 decided rows + 1 tie once exported with ties kept; 19 judgments
    engine.dispose()
    out = tmp_path / "rm"
    assert cli(["train", "--store", sqlite_url, "--project", "p", "--model", tiny_model_dir, "--output-dir",
                str(out), "--max-steps", "2", "--per-device-train-batch-size", "4"]) == 0
    snapshot = json.loads((out / "final" / "reward_model.json").read_text())["data"]["store_snapshot"]
    assert snapshot["project"] == "p" and snapshot["format"] == "pairwise" and snapshot["records"] == 4
    assert snapshot["judgments"] == 19 and snapshot["max_judgment_id"] == 19  # 15 regular + 4 gold
    rows = read_records(out / "data" / "train.jsonl")
    assert len(rows) == 4 and sum(bool(r.get("tie")) for r in rows) == 1  # the tie trains as half a win


def test_config_file_and_validation():
    from prefloop.config import ConfigError, parse_config
    from reward_model.reward_config import RewardModelConfig

    preset = Path(__file__).resolve().parents[1] / "configs" / "reward_model.yaml"
    cfg = parse_config(RewardModelConfig, ["--config", str(preset), "--data", "x.jsonl",
                                           "--n-heads", "4"])
    assert (cfg.data, cfg.n_heads, cfg.model, cfg.ranking_loss) == ("x.jsonl", 4, "smollm2-135m-instruct",
                                                                    "plackett_luce")
    with pytest.raises(ConfigError, match="exactly one data source: --data FILE"):
        parse_config(RewardModelConfig, [])
    with pytest.raises(ConfigError, match="--store needs --project"):
        parse_config(RewardModelConfig, ["--store", "sqlite://"])
    with pytest.raises(ConfigError, match="n_heads must be >= 1"):
        parse_config(RewardModelConfig, ["--data", "x.jsonl", "--n-heads", "0"])
    with pytest.raises(SystemExit):  # argparse names the allowed choices
        parse_config(RewardModelConfig, ["--data", "x.jsonl", "--ranking-loss", "listnet"])


def test_group_batching_and_accuracy_metric_by_hand():
    from reward_model.reward_trainer import GroupCollator, pairwise_accuracy, to_groups

    batch = GroupCollator(pad_token_id=0)([
        {"group_ids": [[5, 6, 7], [8]], "margin": 1.0, "tie": False, "weight": [1.0]},
        {"group_ids": [[1], [2, 3], [4]], "margin": 0.0, "tie": False, "weight": [2.0]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [1, 0, 0], [2, 3, 0], [4, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 1, 2, 1]
    rewards, mask = to_groups(torch.tensor([[1.0], [0.0], [3.0], [1.0], [2.0]]), batch["group_sizes"])
    assert rewards.shape == (2, 3, 1) and mask.tolist() == [[True, True, False], [True, True, True]]
    # pairs: 1>0 right; 3>1 right, 3>2 right, 1>2 wrong -> 3/4; a tie group is left out
    assert pairwise_accuracy(rewards[..., 0], mask, torch.tensor([False, False])).item() == 0.75
    assert pairwise_accuracy(rewards[..., 0], mask, torch.tensor([True, False])).item() == pytest.approx(2 / 3)
