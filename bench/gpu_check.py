"""Helpers of bench/gpu_check.sh: the checks of prefloop's trainers and benches on one CUDA GPU.

    python bench/gpu_check.py env                        # versions, the GPU, what prefloop.hardware picks
    python bench/gpu_check.py model --files DIR          # a random-weight model of DIR's config (+ its tokenizer)
    python bench/gpu_check.py data --out DIR             # tiny pairwise / sft data
    python bench/gpu_check.py check RUN_DIR --expect bf16  # final/, run.json (precision), metrics.jsonl
    python bench/gpu_check.py probe -- ALIGN_PPO_ARGS   # align ppo with every non-finite value traced
    python bench/gpu_check.py attention                 # each SDPA kernel's gradient on a left-padded batch

`model` exists because the embedded SmolLM2-135M weights (540 MB) cannot travel to a lent GPU machine
with no network: its config.json and tokenizer travel, and a model of the same shape with random weights
is built there under the cache name `smollm2-135m-instruct` (PREFLOOP_CACHE), so every command and bench
resolves the default model as usual. Throughput depends on the shape, not the values; the trained
numbers (rewards, accuracies) of such a model mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path


def cmd_env(_args) -> int:
    import importlib.metadata as md

    import torch

    from prefloop.hardware import detect, run_precision, trainer_precision_kwargs

    names = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "safetensors",
             "huggingface-hub", "sqlmodel", "pydantic", "deepspeed")
    for name in names:
        try:
            print(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"{name} (not installed)")
    print(f"python {sys.version.split()[0]}; torch.version.cuda {torch.version.cuda}; "
          f"cuda available {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
              f"bf16 supported {torch.cuda.is_bf16_supported()}")
    hw = detect()
    print(f"prefloop.hardware: {hw.describe()}; dtype {hw.dtype}; run_precision() {run_precision()}")
    print(f"trainer_precision_kwargs(): {trainer_precision_kwargs()}")
    return 0


def cmd_model(args) -> int:
    """A random-weight causal LM with the config of `--files`, saved as the cache's embedded model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefloop.models import DEFAULT_MODEL, cache_dir

    files, target = Path(args.files), cache_dir() / DEFAULT_MODEL
    if (target / "config.json").exists():
        print(f"[gpu_check] {target} exists; kept")
        return 0
    config = AutoConfig.from_pretrained(files)
    if args.tiny:  # the CPU dry run: same architecture and tokenizer, a few layers of small width
        config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = target.with_name(f".{target.name}-building")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in files.iterdir():
        if f.name != "config.json":  # tokenizer, chat template, generation config
            shutil.copy2(f, tmp / f.name)
    tmp.rename(target)
    n = sum(p.numel() for p in model.parameters())
    print(f"[gpu_check] random-weight {config.model_type} with {n / 1e6:.1f}M parameters at {target}")
    return 0


def cmd_data(args) -> int:
    from prefloop.data import split_by_key, write_records
    from reward_model.synthetic import make_synthetic_comparisons

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = make_synthetic_comparisons(args.pairs, seed=0)
    train, test = split_by_key(rows, lambda r: r["prompt_id"], 0.2, 0)
    write_records(train, out / "pairwise.train.jsonl")
    write_records(test, out / "pairwise.test.jsonl")
    write_records([{"messages": r["prompt"] + r["chosen"]} for r in rows], out / "sft.jsonl")
    print(f"[gpu_check] {len(train)} train / {len(test)} test pairs, {len(rows)} sft rows in {out}")
    return 0


def cmd_check(args) -> int:
    """One line: PASS or FAIL with what the run directory holds."""
    run = Path(args.run_dir)
    problems = []
    record = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    # a LoRA policy saved from FSDP shards is kept as its adapter (run.json says so), else a whole model
    expected = "adapter_config.json" if record.get("adapter") else "config.json"
    if not (run / "final" / expected).exists():
        problems.append(f"no final/{expected}")
    if not record:
        problems.append("no run.json")
    precision = record.get("precision")
    if args.expect and precision != args.expect:
        problems.append(f"precision {precision}, expected {args.expect}")
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if not rows:
        problems.append("no metrics.jsonl rows")
    steps = [r.get("step") for r in rows]
    last = {k: v for k, v in (rows[-1] if rows else {}).items() if isinstance(v, (int, float))}
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in list(last.items())[:8]}
    verdict = "FAIL" if problems else "PASS"
    print(f"[check] {verdict} {run.name}: precision {precision}, status {record.get('status')}, "
          f"steps {steps[:3]}..{steps[-1:] if steps else ''} ({len(rows)} rows), last {shown}"
          + (f"; problems: {'; '.join(problems)}" if problems else ""))
    return 0 if not problems else 1


def cmd_probe(args) -> int:
    """`align ppo ARGS` with a watch on non-finite values: every module's forward output (first 30 reported,
    with the phase: rollout, old/ref passes, update), every gradient by parameter name before clipping, and
    autograd's anomaly mode (the forward op whose backward made the first NaN). Where a run fails on a GPU
    and not on a CPU, this says where the first NaN or inf appears."""
    import torch

    from align.onpolicy import engine as onpolicy_engine
    from align.onpolicy.loop import OnPolicyTrainer
    from align.onpolicy.ppo_config import PPOConfig
    from align.onpolicy.ppo_trainer import PPO
    from prefloop.config import parse_config

    cfg = parse_config(PPOConfig, args.rest, prog="align ppo")
    trainer = OnPolicyTrainer(cfg, PPO(cfg))
    phase, reported = ["setup"], []

    def watch(name):
        def hook(module, _inputs, output):
            for t in output if isinstance(output, (tuple, list)) else (output,):
                if torch.is_tensor(t) and t.is_floating_point() and len(reported) < 30 \
                        and not torch.isfinite(t).all():
                    reported.append(name)
                    print(f"[probe] {phase[0]}: non-finite output of {name or 'model'} ({type(module).__name__}) "
                          f"{tuple(t.shape)} {t.dtype}: nan {int(t.isnan().sum())}, inf {int(t.isinf().sum())}; "
                          f"rows {sorted(set(torch.nonzero(~torch.isfinite(t))[:, 0].tolist()))[:8]}")
        return hook

    for name, module in trainer.engine.unwrapped.named_modules():
        module.register_forward_hook(watch(name))
    phases = {(trainer, "step"): "rollout", (trainer.algo, "advantages"): "old and reference passes",
              (trainer.algo, "update"): "update"}
    for (owner, attr), label in phases.items():  # name the phase the hooks fire in
        original = getattr(owner, attr)

        def phased(*a, _f=original, _label=label, **kw):
            phase[0] = _label
            return _f(*a, **kw)
        setattr(owner, attr, phased)
    clip = onpolicy_engine.clip_gradients

    def checked_clip(accelerator, parameters, max_norm, losses):
        named = [(n, p.grad) for n, p in trainer.engine.model.named_parameters() if p.grad is not None]
        bad = [n for n, g in named if not torch.isfinite(g).all()]
        print(f"[probe] update: {len(bad)} of {len(named)} gradients non-finite {bad[:6]}; "
              + ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items()))
        return clip(accelerator, parameters, max_norm, losses)
    onpolicy_engine.clip_gradients = checked_clip
    with torch.autograd.set_detect_anomaly(True, check_nan=True):
        trainer.train()
    print(f"[probe] finished; non-finite outputs seen in {len(reported)} modules")
    return 0


def cmd_attention(_args) -> int:
    """Forward and backward of the embedded model's shape on a left-padded batch (pad rows: queries with
    every key masked) under each attention kernel alone, then through the log-prob path
    (align.onpolicy.rollout.response_logits, which leaves cuDNN out): are the gradients finite?"""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import AutoModelForCausalLM

    from align.onpolicy.rollout import response_logits, token_logprobs
    from prefloop.models import DEFAULT_MODEL, cache_dir

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(cache_dir() / DEFAULT_MODEL, dtype=torch.float32).to(device)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (4, 48), device=device)
    mask = torch.ones_like(ids)
    for row, pad in enumerate((0, 3, 7, 12)):
        mask[row, :pad] = 0  # left padding, as the sampler builds it
    runs = {b.name: [b] for b in (SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)}
    runs["the log-prob path"] = None
    for name, backends in runs.items():
        model.zero_grad(set_to_none=True)
        try:
            with torch.autocast(device, dtype=torch.bfloat16), \
                    sdpa_kernel(backends) if backends else contextlib.nullcontext():
                logits, _ = response_logits(model, ids, mask, 32)
                loss = token_logprobs(logits, ids[:, 32:]).sum()
            loss.backward()
        except RuntimeError as err:  # a kernel that does not take this input
            print(f"[attention] {name}: {str(err).splitlines()[0][:160]}")
            continue
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        print(f"[attention] {name}: loss {float(loss):.4g}, {len(bad)} non-finite gradients {bad[:3]}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env")
    p = sub.add_parser("model")
    p.add_argument("--files", required=True, help="directory with config.json and the tokenizer files")
    p.add_argument("--tiny", action="store_true", help="a small model of the same architecture (CPU dry run)")
    p = sub.add_parser("data")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=64)
    p = sub.add_parser("check")
    p.add_argument("run_dir")
    p.add_argument("--expect", help="the precision run.json must record")
    sub.add_parser("attention")
    p = sub.add_parser("probe")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="align ppo's arguments, after --")
    args = parser.parse_args(argv)
    if args.command == "probe" and args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    commands = {"env": cmd_env, "model": cmd_model, "data": cmd_data, "check": cmd_check, "probe": cmd_probe,
                "attention": cmd_attention}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
