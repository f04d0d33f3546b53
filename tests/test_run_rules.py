"""The rules every trainer shares (issue 9): one output layout and resume rule, precision decided once and
reused on --resume, one rule for prompts, one split by prompt (the export's), metrics one row per step."""

from __future__ import annotations

import json

import pytest

from align.cli import main as align_main
from ppo_helpers import build_letter_model
from prefloop.errors import InputError
from prefloop.metrics import MetricsLogger, read_metrics
from prefloop.models import final_model_dir
from prefloop.run import start_run

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


@pytest.fixture(scope="module")
def letter_dir(tmp_path_factory):
    return build_letter_model(tmp_path_factory.mktemp("letters") / "lm", seed=1)


def _ppo(model_dir, out, *flags) -> int:
    prompts = out.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a b", "c d", "e f")))
    return align_main(["ppo", "--model", str(model_dir), "--prompts", str(prompts), "--output-dir", str(out),
                       "--reward-model", "ppo_helpers:letter_a_reward", "--batch-size", "2", "--mini-batch-size", "2",
                       "--max-new-tokens", "2", "--sample-every", "0", "--save-steps", "1", *map(str, flags)])


def test_resume_reuses_the_recorded_precision_even_when_detection_now_differs(letter_dir, tmp_path, monkeypatch,
                                                                               capsys):
    from prefloop import hardware

    out = tmp_path / "run"
    assert _ppo(letter_dir, out, "--max-steps", 1) == 0  # tiny_cpu: this CPU is fp32
    assert json.loads((out / "run.json").read_text())["precision"] == "fp32"
    # Now the probe would pick bf16 (a CPU with bf16 units, or a quiet moment on a loaded one) ...
    monkeypatch.setenv("PREFLOOP_CPU_BF16", "1")
    hardware.detect.cache_clear()
    assert start_run(tmp_path / "fresh", "align ppo", {}, resume=False).precision == "bf16"
    capsys.readouterr()
    # ... but the resumed run keeps the precision it started with, and says so.
    assert _ppo(letter_dir, out, "--max-steps", 2, "--resume") == 0
    assert "precision fp32 (recorded in run.json)" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["precision"] == "fp32" and record["status"] == "finished"
    assert [row["step"] for row in read_metrics(out)] == [1, 2]


def test_one_layout_and_one_resume_rule(letter_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _ppo(letter_dir, out, "--max-steps", 1) == 0
    assert {p.name for p in out.iterdir()} >= {"run.json", "metrics.jsonl", "tensorboard", "checkpoints", "final"}
    assert final_model_dir(out) == out / "final" and (out / "final" / "tokenizer_config.json").exists()
    # an existing run is refused without --resume, with one line, and left as it was
    before = (out / "run.json").read_text()
    assert _ppo(letter_dir, out, "--max-steps", 1) == 1
    assert "holds a run already; pass --resume" in capsys.readouterr().err
    assert (out / "run.json").read_text() == before
    # a directory someone else filled is refused, with or without --resume; nothing is written into it
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not empty"):
        start_run(theirs, "align ppo", {}, resume=False)
    with pytest.raises(InputError, match="no run.json here"):
        start_run(theirs, "align ppo", {}, resume=True)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    # --resume continues only a run of the same command
    with pytest.raises(InputError, match="this is a 'align ppo' run, not 'align dpo'"):
        start_run(out, "align dpo", {}, resume=True)


def test_a_run_directory_loads_as_its_final_model(letter_dir, tmp_path):
    from prefloop.models import load_causal_lm

    out = tmp_path / "run"
    assert _ppo(letter_dir, out, "--max-steps", 1) == 0
    model, tokenizer = load_causal_lm(str(out))  # the run directory, as `--model runs/x` gives it
    assert model.config.vocab_size == len(tokenizer)
    # the next round starts from that run, and its run.json says so
    assert _ppo(out, tmp_path / "next", "--max-steps", 1) == 0
    record = json.loads((tmp_path / "next" / "run.json").read_text())
    assert record["parent_model"] == str(out / "final") and record["parent_run"] == str(out)
    assert record["parent_command"] == "align ppo" and record["parent_data"]["kind"] == "file"


def test_metrics_one_row_per_step_and_resume_drops_what_it_recomputes(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(0, {"eval/reward": 0.1})
    logger.log(1, {"loss": 2.0})
    logger.log(1, {"eval/reward": 0.2})  # an evaluation at the same step joins that step's row
    logger.log(2, {"loss": 1.5})
    logger.log(3, {"loss": 1.0})
    logger.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[1]["loss"] == 2.0 and rows[1]["eval/reward"] == 0.2
    resumed = MetricsLogger(tmp_path, tensorboard=False, keep_through=2)  # the checkpoint was at step 2
    resumed.log(3, {"loss": 0.9})
    resumed.close()
    assert [(r["step"], r.get("loss")) for r in read_metrics(tmp_path)] == [(0, None), (1, 2.0), (2, 1.5), (3, 0.9)]


def test_a_string_prompt_is_a_user_turn_through_the_chat_template(letter_dir):
    from transformers import AutoTokenizer

    from prefloop.generation import tokenize_prompts

    tokenizer = AutoTokenizer.from_pretrained(letter_dir)
    assert tokenizer.chat_template  # the letter model has one
    as_string, _ = tokenize_prompts(tokenizer, ["a b"])
    as_turn, _ = tokenize_prompts(tokenizer, [[{"role": "user", "content": "a b"}]])
    assert as_string.tolist() == as_turn.tolist()
    assert tokenizer.convert_ids_to_tokens(as_string[0].tolist()) == ["<user>", "a", "b", "<assistant>"]
    # only a tokenizer without a template continues a string as plain text
    tokenizer.chat_template = None
    plain, _ = tokenize_prompts(tokenizer, ["a b"])
    assert tokenizer.convert_ids_to_tokens(plain[0].tolist()) == ["a", "b"]


def test_a_store_run_holds_out_the_prompts_labeling_export_holds_out(tiny_model_dir, sqlite_url, tmp_path):
    from export_store import build_pairwise_store
    from labeling.db import open_store
    from labeling.export_files import main as export_main
    from prefloop.data import read_records
    from reward_model.cli import main as rm_main

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    assert export_main(["--store", sqlite_url, "--project", "p", "--format", "pairwise", "--ties", "keep",
                        "--test-fraction", "0.5", "--seed", "3",
                        "--out", str(tmp_path / "export" / "pairs.jsonl")]) == 0
    exported = {split: {r["prompt_id"] for r in read_records(tmp_path / "export" / f"pairs.{split}.jsonl")}
                for split in ("train", "test")}
    assert exported["train"] and exported["test"]
    out = tmp_path / "rm"
    assert rm_main(["train", "--store", sqlite_url, "--project", "p", "--model", tiny_model_dir, "--output-dir",
                    str(out), "--max-steps", "1", "--test-fraction", "0.5", "--split-seed", "3",
                    "--per-device-train-batch-size", "2", "--normalize-samples", "2"]) == 0
    trained = {r["prompt_id"] for r in read_records(out / "data" / "train.jsonl")}
    held_out = {r["prompt_id"] for r in read_records(out / "data" / "eval.jsonl")}
    assert (trained, held_out) == (exported["train"], exported["test"])
    split = json.loads((out / "run.json").read_text())["data"]["store_snapshot"]["split"]
    assert split["test_fraction"] == 0.5 and split["seed"] == 3


def test_an_export_file_is_never_split_again(tmp_path):
    from align.offline.dpo_config import DPOConfig
    from prefloop.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="an export file is split already"):
        parse_config(DPOConfig, ["--data", "pairs.train.jsonl", "--test-fraction", "0.1"])


@pytest.mark.parametrize("fp32, bf16, picks", [
    ([1.0] * 7, [0.9] * 7, False),  # bf16 barely faster (emulated, or noise): no clear margin, fp32
    ([1.0] * 7, [0.5] * 7, True),  # real bf16 units: clearly faster
    ([1.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 8.0, 0.5, 9.0, 0.5, 0.5], True),  # load bursts hit both
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.3], [0.5] * 7, False),  # one lucky fp32 reading is its best time
])
def test_the_bf16_probe_decides_on_best_times_with_a_margin(monkeypatch, fp32, bf16, picks):
    import time as time_module

    from prefloop import hardware

    # perf_counter is read twice per timed matmul; rounds time fp32 then bf16 (after one warm-up each)
    durations = [d for pair in zip(fp32, bf16) for d in pair]
    clock = iter(t for d in durations for t in (0.0, d))
    monkeypatch.setattr(time_module, "perf_counter", lambda: next(clock))
    assert hardware._bf16_matmul_clearly_faster(n=8) is picks


def test_a_step_logged_again_after_its_row_was_flushed_still_has_one_row(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(6, {"loss": 1.0})
    logger.flush()  # a checkpoint at step 6
    logger.log(6, {"train_runtime": 3.0})  # the Trainer's end-of-training line, same step
    logger.log(6, {"eval_loss": 0.5})  # the final evaluation
    logger.close()
    assert read_metrics(tmp_path) == [{**read_metrics(tmp_path)[0], "step": 6, "loss": 1.0, "train_runtime": 3.0,
                                       "eval_loss": 0.5}]


def test_on_policy_store_prompts_split_as_the_export_does(sqlite_url):
    from align.prompts import store_prompt_splits
    from export_store import build_pairwise_store
    from labeling.db import open_store
    from labeling.export import export_dataset

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    splits, _ = export_dataset(engine, "p", "pairwise", ties="keep", test_fraction=0.5, seed=3)
    engine.dispose()
    train, held_out, source = store_prompt_splits(sqlite_url, "p", 0.5, 3)
    key = lambda conversation: json.dumps(conversation, sort_keys=True)  # noqa: E731
    exported_test = {key(row["prompt"]) for row in splits["test"]}
    assert exported_test and exported_test <= {key(p) for p in held_out}
    assert not exported_test & {key(p) for p in train}  # no test prompt ever trains the policy
    assert source["split"]["test"] == len(held_out) and source["split"]["train"] == len(train)


def test_every_shipped_config_parses_and_each_has_a_quick_twin():
    from align.offline.dpo_config import DPOConfig
    from align.offline.sft_config import SFTConfig
    from align.onpolicy.grpo_config import GRPOConfig, RLOOConfig
    from align.onpolicy.online_dpo_config import OnlineDPOConfig
    from align.onpolicy.ppo_config import PPOConfig
    from prefloop.config import parse_config
    from reward_model.reward_config import RewardModelConfig

    classes = {"reward_model": RewardModelConfig, "sft": SFTConfig, "dpo": DPOConfig, "dpo_online": OnlineDPOConfig,
               "ppo": PPOConfig, "grpo": GRPOConfig, "rloo": RLOOConfig}
    extra = {"reward_model": ["--data", "runs/export/pairwise.train.jsonl"]}  # given on the README's command line
    for name, cls in classes.items():
        full = parse_config(cls, ["--config", name, *extra.get(name, [])])
        quick = parse_config(cls, ["--config", f"{name}_quick", *extra.get(name, [])])
        assert 0 < quick.max_steps <= 40 and quick.lora, name  # minutes on a CPU, not hours
        assert full.max_steps is None or full.max_steps > quick.max_steps, name
