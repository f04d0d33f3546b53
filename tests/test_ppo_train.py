"""`align ppo` end to end on tiny models: learning, logging, checkpoints, LoRA, a real reward model, errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.cli import main as align_main
from ppo_helpers import build_letter_model
from prefloop.metrics import read_metrics
from prefloop.testing import tiny_cpu_settings

LOGGED = ("reward", "kl", "kl_k3", "entropy", "clip_ratio", "approx_kl", "value_loss", "policy_loss",
          "explained_variance", "completions/mean_length", "beta", "time/rollout", "time/score", "time/advantages",
          "time/update")


@pytest.fixture(autouse=True)
def _tiny_cpu(request):
    if request.node.get_closest_marker("smollm2"):  # the real model runs as a user would run it
        yield
        return
    with tiny_cpu_settings():
        yield


@pytest.fixture(scope="module")
def letter_dir(tmp_path_factory):
    return build_letter_model(tmp_path_factory.mktemp("letters") / "lm", seed=1, initializer_range=0.1)


@pytest.fixture(scope="module")
def letter_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": " ".join(w)}]} for w in ("a b", "c d e", "f g", "h", "b c", "d")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def _ppo(model_dir, prompts, out, *flags) -> int:
    return align_main(["ppo", "--model", str(model_dir), "--prompts", str(prompts), "--output-dir", str(out),
                       "--reward-model", "ppo_helpers:letter_a_reward", *map(str, flags)])


def test_score_rises_and_kl_stays_bounded(letter_dir, letter_prompts, tmp_path, capsys):
    beta = 0.1
    out = tmp_path / "run"
    rc = _ppo(letter_dir, letter_prompts, out, "--max-steps", 30, "--batch-size", 16, "--mini-batch-size", 8,
              "--max-new-tokens", 6, "--temperature", 1.0, "--learning-rate", 3e-3, "--beta", beta,
              "--sample-every", 10, "--save-steps", 10)
    assert rc == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 31))  # step N: N updates done
    assert all(key in rows[0] for key in LOGGED)
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-5:]) / 5
    assert last > first + 0.3, f"score {first:.3f} -> {last:.3f}"
    # KL starts at 0 and stays bounded: at the optimum of E[r] - beta KL with r in [0, 1],
    # beta * KL(pi* || pi_ref) <= E_pi*[r] - E_ref[r] <= 1 - E_ref[r]  (Jensen on log Z).
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    late_kl = sum(r["kl"] for r in rows[-10:]) / 10
    assert 0.1 < late_kl <= (1.0 - first) / beta, f"late KL {late_kl:.3f}"
    # Artifacts: policy (changed, loadable), sample table, plots, TensorBoard, checkpoint, metadata.
    before, after = _weights(letter_dir), _weights(out / "final")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 11, 21} and all("response" in s for s in samples)
    assert "sample generations" in capsys.readouterr().out
    for png in ("reward.png", "kl.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert any((out / "tensorboard").iterdir())
    assert json.loads((out / "checkpoints" / "checkpoint-30" / "trainer_state.json").read_text()) == {"step": 30}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-20", "checkpoint-30"]  # limit 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["prompts"]["num_prompts"] == 6 and meta["config"]["beta"] == beta and meta["command"] == "align ppo"
    assert meta["precision"] == "fp32" and meta["status"] == "finished"


def test_resume_continues_exactly_where_the_run_stopped(letter_dir, letter_prompts, tmp_path):
    flags = ["--batch-size", 8, "--mini-batch-size", 4, "--max-new-tokens", 4, "--learning-rate", 3e-3,
             "--sample-every", 0, "--save-steps", 2, "--adaptive-kl", "--target-kl", 0.5, "--kl-horizon", 100]
    assert _ppo(letter_dir, letter_prompts, tmp_path / "straight", "--max-steps", 4, *flags) == 0
    assert _ppo(letter_dir, letter_prompts, tmp_path / "split", "--max-steps", 2, *flags) == 0
    assert _ppo(letter_dir, letter_prompts, tmp_path / "split", "--max-steps", 4, "--resume", *flags) == 0
    straight, split = _weights(tmp_path / "straight" / "final"), _weights(tmp_path / "split" / "final")
    for key in straight:
        torch.testing.assert_close(split[key], straight[key], atol=1e-6, rtol=0)
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["reward"] for r in b] == [r["reward"] for r in a] and b[-1]["beta"] == a[-1]["beta"]


def test_gradient_accumulation_gives_the_same_update(letter_dir, tmp_path):
    # One-token responses to same-length prompts: every micro-batch holds as many tokens as
    # any other, so the mean of micro-batch means is the minibatch mean and the step is the same.
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a b", "c d", "e f", "g h")))
    # A reward for most letters: with all rewards equal the whitened advantages are float noise, which
    # Adam's first step blows up to lr in both runs alike, and the comparison would test nothing.
    flags = ["--max-steps", 1, "--batch-size", 8, "--mini-batch-size", 8, "--num-iterations", 1, "--max-new-tokens", 1,
             "--learning-rate", 1e-2, "--ent-coef", 0.01, "--sample-every", 0, "--reward-model",
             "ppo_helpers:bandit_reward"]
    assert _ppo(letter_dir, prompts, tmp_path / "one", *flags) == 0
    assert _ppo(letter_dir, prompts, tmp_path / "four", *flags, "--gradient-accumulation-steps", 4) == 0
    one, four = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "four" / "final")
    assert any(not torch.equal(one[k], _weights(letter_dir)[k]) for k in one)
    for key in one:
        torch.testing.assert_close(four[key], one[key], atol=1e-6, rtol=1e-5)
    # Adam hides a gradient's scale on its first step; the gradient norm does not.
    norm_one = read_metrics(tmp_path / "one")[0]["grad_norm"]
    norm_four = read_metrics(tmp_path / "four")[0]["grad_norm"]
    assert norm_four == pytest.approx(norm_one, rel=1e-4) and norm_one > 0


def test_lora_with_a_reward_model_critic_on_a_real_reward_scorer(tiny_model_dir, tmp_path):
    from reward_model.testing import build_tiny_reward_model

    rm_dir = build_tiny_reward_model(tmp_path / "rm")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n"
                               for q in ("Say hi.", "Name a colour.", "What is 2 + 2?", "Count to three.")))
    out = tmp_path / "run"
    common = ["ppo", "--model", tiny_model_dir, "--reward-model", str(rm_dir), "--prompts", str(prompts),
              "--output-dir", str(out), "--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "6",
              "--num-iterations", "2", "--lora", "--lora-r", "4", "--critic", "reward_model",
              "--learning-rate", "1e-2", "--missing-eos-penalty", "1.0", "--sample-every", "0", "--save-steps", "2"]
    assert align_main(common + ["--max-steps", "2"]) == 0
    base, merged = _weights(tiny_model_dir), _weights(out / "final")
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    # LoRA touched only the targeted projections; embeddings and norms are the reference's.
    assert changed and all(k.split(".")[-2].endswith("proj") for k in changed)
    assert torch.equal(base["model.embed_tokens.weight"], merged["model.embed_tokens.weight"])
    rows = read_metrics(out)
    assert rows[0]["values_mean"] != 0.0  # the critic starts from the reward model, not from zero
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # adapter off == adapter at init
    assert (out / "critic" / "config.json").exists()
    # Resume the LoRA run for one more step and keep the adapter unmerged this time.
    assert align_main(common + ["--max-steps", "3", "--resume", "--merge-lora", "false"]) == 0
    assert (out / "final" / "adapter_config.json").exists() and not (out / "final" / "model.safetensors").exists()
    from peft import AutoPeftModelForCausalLM

    assert AutoPeftModelForCausalLM.from_pretrained(out / "final") is not None
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]


@pytest.mark.parametrize("case,flags,message", [
    ("missing prompts", ["--prompts", "nope.jsonl"], "nope.jsonl: no such file"),
    ("bad column", ["--prompts", "{bad}"], "row 1: no 'prompt', 'messages', 'text' field"),
    ("bad reward", ["--reward-model", "ppo_helpers:no_such_function"], "reward ppo_helpers:no_such_function"),
    ("wrong count", ["--reward-model", "ppo_helpers:wrong_count_reward"], "expected one number per response"),
    ("not finite", ["--reward-model", "ppo_helpers:nan_reward"], "response 1 scored nan"),
    ("bad batch", ["--mini-batch-size", "3"], "mini_batch_size 3 must divide batch_size 2"),
    ("bad model", ["--model", "/no/such/model"], "/no/such/model"),
    ("no reward", ["--reward-model", ""], "reward_model is required"),
])
def test_bad_input_is_one_clear_line(letter_dir, letter_prompts, tmp_path, capsys, case, flags, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    flags = [str(bad) if f == "{bad}" else f for f in flags]
    argv = ["ppo", "--model", str(letter_dir), "--prompts", str(letter_prompts), "--reward-model",
            "ppo_helpers:letter_a_reward", "--output-dir", str(tmp_path / "out"), "--max-steps", "1",
            "--batch-size", "2", "--mini-batch-size", "2", "--max-new-tokens", "2", *flags]
    assert align_main(argv) == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # (progress bars of model loading may come first)
    assert last.startswith("align: error:") and message in last and "Traceback" not in err
    assert not (tmp_path / "out" / "final").exists()


def test_an_existing_checkpoint_needs_resume(letter_dir, letter_prompts, tmp_path, capsys):
    flags = ["--max-steps", 1, "--batch-size", 2, "--mini-batch-size", 2, "--max-new-tokens", 2, "--sample-every", 0]
    assert _ppo(letter_dir, letter_prompts, tmp_path / "run", *flags) == 0
    assert _ppo(letter_dir, letter_prompts, tmp_path / "run", *flags) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_two_processes_train_data_parallel(accelerate_launch, letter_dir, letter_prompts, tmp_path):
    """`accelerate launch` with configs/accelerate_ddp.yaml: two CPU processes (gloo), one run."""
    out = tmp_path / "ddp"
    proc = accelerate_launch("align.cli", "ppo", "--model", letter_dir, "--prompts", letter_prompts,
                             "--reward-model", "ppo_helpers:letter_a_reward", "--output-dir", out, "--max-steps", 2,
                             "--batch-size", 4, "--mini-batch-size", 2, "--max-new-tokens", 4, "--sample-every", 0)
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("2 processes hold identical weights") == 1
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]  # one log line per step, from the main process
    assert rows[0]["tokens"] > 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["num_processes"] == 2
    assert any(not torch.equal(v, _weights(letter_dir)[k]) for k, v in _weights(out / "final").items())


@pytest.mark.smollm2
def test_a_few_steps_on_the_embedded_smollm2(smollm2_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n"
                               for q in ("Name a colour.", "Say hello.")))
    out = tmp_path / "run"
    rc = align_main(["ppo", "--prompts", str(prompts), "--reward-model", "reward_model.testing:length_reward",
                     "--output-dir", str(out), "--max-steps", "1", "--batch-size", "2", "--mini-batch-size", "2",
                     "--num-iterations", "1", "--max-new-tokens", "8", "--lora", "--lora-r", "4",
                     "--learning-rate", "1e-3", "--sample-every", "1"])
    assert rc == 0
    rows = read_metrics(out)
    assert len(rows) == 1 and rows[0]["completions/mean_length"] > 0 and rows[0]["kl"] == pytest.approx(0.0, abs=1e-3)
    base, tuned = _weights(smollm2_dir), _weights(out / "final")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)


def test_a_gradient_that_is_not_finite_is_refused_before_the_update():
    from accelerate import Accelerator

    from align.onpolicy.engine import clip_gradients

    layer = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in layer.parameters()]
    (layer(torch.tensor([[1.0, float("inf")]])) * 0.0).sum().backward()  # d/dw of 0 * (w . x) with x = inf: NaN
    assert not torch.isfinite(layer.weight.grad).all()
    with pytest.raises(FloatingPointError, match=r"not finite .*policy_loss 0.5.*not applied"):
        clip_gradients(Accelerator(), layer.parameters(), 1.0, {"policy_loss": torch.tensor(0.5)})
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before))  # nothing stepped

    layer.zero_grad()
    layer(torch.ones(1, 2)).sum().backward()  # a finite gradient is clipped and returned as before
    assert float(clip_gradients(Accelerator(), layer.parameters(), 1.0, {})) > 0
