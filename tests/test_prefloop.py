"""The shared layer: config loading, model resolution, hardware, record files, metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from prefloop.config import ConfigError, parse_config
from prefloop.data import DataFileError, read_records, write_records
from prefloop.metrics import MetricsLogger, read_metrics
from prefloop.models import ModelNotFoundError, resolve_model


@dataclass
class DemoConfig:
    """A demo command."""

    model: str = field(default="m", metadata={"help": "policy model"})
    beta: float = field(default=0.1, metadata={"help": "KL coefficient β"})
    steps: int = 3
    lora: bool = False
    models: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError("beta must be > 0")


def test_yaml_then_flags_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("beta: 0.5\nsteps: 7\nmodels: [a, b]\n")
    cfg = parse_config(DemoConfig, ["--config", str(cfg_file), "--steps", "9", "--lora"])
    assert (cfg.beta, cfg.steps, cfg.lora, cfg.models) == (0.5, 9, True, ["a", "b"])


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("betta: 1\n")
    with pytest.raises(ConfigError, match="unknown field.*betta"):
        parse_config(DemoConfig, ["--config", str(bad)])
    with pytest.raises(ConfigError, match="beta must be > 0"):
        parse_config(DemoConfig, ["--beta", "-1"])


def test_wrong_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_offline_a_cached_hub_id_resolves_to_its_snapshot_and_an_uncached_one_is_refused_at_once(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from prefloop import models

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a machine without the hub, wherever the test runs
    models.hub_reachable.cache_clear()
    try:
        repo = tmp_path / "models--acme--tiny"
        (repo / "snapshots" / "abc123").mkdir(parents=True)
        (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")
        assert resolve_model("acme/tiny") == str(repo / "snapshots" / "abc123")
        with pytest.raises(ModelNotFoundError, match="acme/other: not a local directory.*cannot be reached"):
            resolve_model("acme/other")
    finally:
        models.hub_reachable.cache_clear()


def test_embedded_model_is_cached_safetensors(smollm2_dir):
    from pathlib import Path

    assert (Path(smollm2_dir) / "model.safetensors").exists()
    assert json.loads((Path(smollm2_dir) / "config.json").read_text())["model_type"] == "llama"
    assert "quantization_config" not in json.loads((Path(smollm2_dir) / "config.json").read_text())


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ""])
def test_records_round_trip(tmp_path, suffix):
    records = [{"prompt": [{"role": "user", "content": "hi"}], "n": 1}, {"prompt": [], "n": 2}]
    path = write_records(records, tmp_path / f"out{suffix}")
    assert read_records(path) == records


def test_bad_jsonl_row_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataFileError, match=r"x.jsonl: row 2: not valid JSON"):
        read_records(path)


def test_metrics_jsonl(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=True) as log:
        log.log(1, {"loss": 2.0})
        log.log(2, {"loss": 1.0})
    log.log(3, {"loss": 0.5})  # after close (a Trainer's evaluate() after train()): reopened, appended
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["loss"] for r in rows] == [2.0, 1.0, 0.5] and rows[1]["step"] == 2
    assert any((tmp_path / "tensorboard").iterdir())


def test_hardware_never_picks_bf16_on_a_cpu_without_it(monkeypatch):
    from prefloop import hardware

    hardware.detect.cache_clear()
    monkeypatch.setenv("PREFLOOP_CPU_BF16", "0")
    try:
        hw = hardware.detect()
        if hw.device == "cpu":
            assert hw.precision == "fp32"
            kwargs = hardware.trainer_precision_kwargs()
            checkpointing = {k: v for k, v in kwargs.items() if k.endswith("_checkpointing")}
            assert {k: v for k, v in kwargs.items() if k not in checkpointing} == {
                "bf16": False, "fp16": False, "use_cpu": True}
            assert checkpointing and not any(checkpointing.values())
    finally:
        hardware.detect.cache_clear()


def test_trainer_precision_kwargs_are_accepted_by_this_transformers(tmp_path):
    """Every name set exists in the installed TrainingArguments (transformers 5.17 refused
    activation_checkpointing, which later 5.x releases introduced), and checkpointing ends up off."""
    from transformers import TrainingArguments

    from prefloop import hardware

    hardware.detect.cache_clear()
    try:
        kwargs = hardware.trainer_precision_kwargs(gradient_checkpointing=False)
        args = TrainingArguments(output_dir=str(tmp_path), report_to=[], **kwargs)
        assert not getattr(args, "activation_checkpointing", False) and not args.gradient_checkpointing
        on = TrainingArguments(output_dir=str(tmp_path), report_to=[],
                               **hardware.trainer_precision_kwargs(gradient_checkpointing=True))
        assert getattr(on, "activation_checkpointing", None) in (True, None) and on.gradient_checkpointing
    finally:
        hardware.detect.cache_clear()


def test_split_by_key_holds_out_whole_groups():
    from prefloop.data import split_by_key

    rows = [{"p": i // 3, "n": i} for i in range(30)]  # 10 prompts, 3 rows each
    train, held = split_by_key(rows, lambda r: r["p"], 0.2, seed=1)
    assert len(held) == 6 and not {r["p"] for r in train} & {r["p"] for r in held}
    assert split_by_key(rows, lambda r: r["p"], 0.2, seed=1) == (train, held)  # deterministic
    two = rows[:6]  # 2 prompts: 0.2 rounds to 0 held out
    assert split_by_key(two, lambda r: r["p"], 0.2, seed=0)[1] == []
    assert len(split_by_key(two, lambda r: r["p"], 0.2, seed=0, at_least_one=True)[1]) == 3
    assert split_by_key(two, lambda r: r["p"], 0.9, seed=0)[1] == []  # all held out would leave no training data


# --- declared ranges (prefloop.config.check_ranges) ---------------------------------------------

@dataclass
class RangedConfig:
    steps: int | None = field(default=None, metadata={"help": "h", "range": ">= 1"})
    rate: float = field(default=0.5, metadata={"help": "h", "range": "[0, 1)"})
    beta: float = field(default=0.1, metadata={"help": "h", "range": "> 0"})
    sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "h", "range": ">= 1"})
    seed: int = field(default=0, metadata={"help": "h", "range": "seed"})

    def __post_init__(self):
        from prefloop.config import check_ranges

        check_ranges(self)


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "steps must be >= 1, got 0"), ({"steps": -1}, "steps must be >= 1, got -1"),
    ({"rate": 1.0}, r"rate must be in \[0, 1\), got 1.0"), ({"rate": -0.1}, r"rate must be in \[0, 1\)"),
    ({"rate": float("nan")}, "rate must be"), ({"beta": 0.0}, "beta must be > 0"),
    ({"sizes": [1, 0]}, "sizes must be >= 1, got 0"), ({"seed": -1}, r"seed must be in \[0, 4294967295\]"),
    ({"steps": "3"}, "steps must be >= 1, got '3'"), ({"steps": True}, "steps must be >= 1, got True"),
])
def test_check_ranges_refuses_out_of_range_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RangedConfig(**kwargs)


def test_check_ranges_accepts_the_bounds_and_an_unset_optional():
    RangedConfig(steps=None, rate=0.0, beta=1e-9, sizes=[], seed=2**32 - 1)
    RangedConfig(steps=1, rate=0.999)


def test_every_declared_range_of_every_command_parses():
    """A malformed range would only fail when a value reaches it: parse every one of every command."""
    import dataclasses
    import importlib

    from prefloop.config import parse_range

    found = 0
    for tool in ("labeling.cli", "reward_model.cli", "loop.cli"):  # loop.cli: all of `align`
        for entry in importlib.import_module(tool).COMMANDS.values():
            module, name = (entry[2] if len(entry) > 2 else entry[0]).split(":")
            for cls in vars(importlib.import_module(module)).values():
                if isinstance(cls, type) and dataclasses.is_dataclass(cls):
                    for f in dataclasses.fields(cls):
                        if "range" in f.metadata:
                            assert parse_range(f.metadata["range"]), (cls, f.name)
                            found += 1
    assert found > 100


def test_a_yaml_names_its_input_files_relative_to_itself(tmp_path, monkeypatch):
    from loop.round_config import RoundConfig

    (tmp_path / "exp").mkdir()
    preset = tmp_path / "exp" / "round.yaml"
    preset.write_text("project: p\njudges: people\neval_prompts: held.jsonl\nprompts: /abs/p.jsonl\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(RoundConfig, ["--config", "exp/round.yaml"])
    assert cfg.eval_prompts == "exp/held.jsonl"  # beside the YAML, not in the directory the command runs in
    assert cfg.prompts == "/abs/p.jsonl"  # absolute: as written
    cfg = parse_config(RoundConfig, ["--config", "exp/round.yaml", "--eval-prompts", "mine.jsonl"])
    assert cfg.eval_prompts == "mine.jsonl"  # a flag is relative to where the command runs
    shipped = parse_config(RoundConfig, ["--config", "round_demo"])  # the package's own prompt files
    assert shipped.prompts.endswith("labeling/loop_prompts.jsonl") and open(shipped.prompts).readline()


# --- what a command may write (prefloop.outputs) -------------------------------------------------

def test_check_output_file_replaces_nothing_it_may_not(tmp_path):
    from prefloop.errors import InputError
    from prefloop.outputs import check_output_file

    (tmp_path / "in.jsonl").write_text("{}\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    new = tmp_path / "sub" / "new.jsonl"
    assert check_output_file(new, "--out") == new and not new.parent.exists()  # checks, creates nothing
    for path, message in [(tmp_path / "in.jsonl", "already exists; choose another --out, or add --overwrite"),
                          (tmp_path / "d", "is a directory"), (f"{tmp_path}/x/", "is a directory"),
                          (tmp_path / "f" / "x.jsonl", "is not a directory")]:
        with pytest.raises(InputError, match=message):
            check_output_file(path, "--out", overwrite_flag="--overwrite")
    assert check_output_file(tmp_path / "in.jsonl", "--out", replace=True)  # --overwrite given
    with pytest.raises(InputError, match="is also the input"):
        check_output_file(tmp_path / "d" / ".." / "in.jsonl", "--out", replace=True,
                          inputs={"--input": tmp_path / "in.jsonl"})
    with pytest.raises(InputError, match="no such directory"):
        check_output_file(new, "--plot", make_dirs=False)


def test_a_model_directory_with_an_unknown_model_type_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "nosuchtype"}')
    with pytest.raises(ModelNotFoundError, match="model_type 'nosuchtype'"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": ')
    with pytest.raises(ModelNotFoundError, match="config.json is not a JSON file"):
        resolve_model(str(tmp_path))

def test_a_run_hides_the_libraries_checkpointing_alias_warning_and_only_it(tmp_path, tiny_model_dir):
    """peft reads transformers' deprecated `is_gradient_checkpointing` on every LoRA model; once a run starts
    (every trainer's first step) that FutureWarning is hidden, and other warnings are not."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from prefloop.models import load_causal_lm
    from prefloop.run import start_run

    def lora_warnings() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if started:
                start_run(tmp_path / "run", "test", {}, resume=False)
            get_peft_model(load_causal_lm(tiny_model_dir)[0], LoraConfig(r=2, target_modules=["q_proj"]))
            warnings.warn("another deprecation", FutureWarning)
        return [str(w.message) for w in caught]

    started = False
    assert any("is_gradient_checkpointing" in m for m in lora_warnings())  # remove the filter once this fails
    started = True
    messages = lora_warnings()
    assert "another deprecation" in messages and not any("is_gradient_checkpointing" in m for m in messages)


def test_cpu_threads_follow_the_variable_and_else_stay_torchs(monkeypatch):
    import torch

    from prefloop.config import ConfigError
    from prefloop.hardware import set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("PREFLOOP_CPU_THREADS", raising=False)
        assert set_cpu_threads() == before and torch.get_num_threads() == before
        monkeypatch.setenv("PREFLOOP_CPU_THREADS", "3")
        assert set_cpu_threads() == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("PREFLOOP_CPU_THREADS", "many")
        with pytest.raises(ConfigError, match="PREFLOOP_CPU_THREADS='many': expected a whole number"):
            set_cpu_threads()
    finally:
        torch.set_num_threads(before)


def test_console_scripts_make_openmp_threads_wait_passively_unless_told_otherwise(monkeypatch, capsys):
    """bench/bench_threads.py: on a busy 2-core machine, spinning OpenMP waits made sampling 28x slower."""
    import os

    from labeling.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["--help"]) == 0 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    assert main(["--help"]) == 0 and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_bench_child_runs_the_checkout_it_times_in_the_precision_and_threads_asked(monkeypatch, tmp_path):
    """bench/common.child_env, the one environment every bench's child process gets: the timed checkout first
    on PYTHONPATH (ahead of what the caller's PYTHONPATH held), OMP_NUM_THREADS, and the CPU precision switch."""
    import importlib.util
    import os
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("PREFLOOP_CPU_BF16", "1")
    env = common.child_env(tmp_path, threads=1, precision="fp32", paths=(tmp_path / "tests",), TOKEN="t")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), str(tmp_path / "tests"), "/elsewhere"]
    assert (env["OMP_NUM_THREADS"], env["PREFLOOP_CPU_BF16"], env["TOKEN"]) == ("1", "0", "t")
    assert common.child_env(precision="bf16")["PREFLOOP_CPU_BF16"] == "1"
    monkeypatch.delenv("PREFLOOP_CPU_BF16")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    on_gpu = common.child_env(precision="bf16 autocast")  # a device's own precision: no CPU switch, no threads
    assert "PREFLOOP_CPU_BF16" not in on_gpu and "OMP_NUM_THREADS" not in on_gpu


def test_an_unmerged_lora_run_loads_as_base_plus_adapter(tmp_path, tiny_model_dir):
    """`--no-merge-lora` saves final/ as an adapter (adapter_config.json, no config.json): every command that
    takes a model (align eval, labeling generate, a next round) loads it as its base plus the adapter, with
    the adapter's logits; an adapter whose base is gone is one line."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from prefloop.models import ModelNotFoundError, check_model, load_causal_lm

    base, base_tokenizer = load_causal_lm(tiny_model_dir, dtype=torch.float32, device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at 0: a non-zero adapter, so its logits differ from the base's
    final = tmp_path / "run" / "final"
    peft_model.save_pretrained(final)
    base_tokenizer.save_pretrained(final)  # as align.train_common.save_final does
    (tmp_path / "run" / "run.json").write_text(json.dumps({"command": "align dpo", "status": "finished"}))
    ids = torch.tensor([[5, 17, 300, 42, 9]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        loaded, tokenizer = load_causal_lm(str(tmp_path / "run"), dtype=torch.float32, device="cpu")
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected)
    assert check_model(str(final))[1].model_type == "llama" and tokenizer.pad_token is not None

    config = json.loads((final / "adapter_config.json").read_text())
    (final / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(ModelNotFoundError, match="adapter's base model .*gone is not there"):
        load_causal_lm(str(final))
