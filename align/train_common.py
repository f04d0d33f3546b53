"""What `align sft` and `align dpo` share: the common config fields, TRL arguments, LoRA, saving, resuming.

The output layout and the resume rule are prefloop.run's. The precision is the run's (decided once,
recorded in run.json, reused on --resume) and gradient checkpointing is off, never TRL's defaults
(bf16=True and gradient checkpointing on, ~400x slower on a CPU without bf16 units).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefloop.config import check_ranges
from prefloop.fields import PolicyLoraFields, RunFields, StoreFields


@dataclass
class TrainConfig(RunFields, PolicyLoraFields, StoreFields):
    """Fields common to the supervised and preference trainers (see SFTConfig, DPOConfig)."""

    # model
    model: str | None = field(default=None, metadata={"help": "policy π_θ to fine-tune: HF id, local dir, or the "
                                                                "embedded default when unset (also π_ref's init)"})
    output_dir: str = field(default="runs/align", metadata={"help": "the run: final/ (the model), checkpoints/, "
                                                                     "metrics.jsonl, tensorboard/, run.json"})
    # data
    data: str | None = field(default=None, metadata={"help": "export file (.jsonl/.csv/.parquet/datasets dir)"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out file; default: the export's X.test.jsonl "
                                                                  "beside --data X.train.jsonl (never a second split)"})
    max_length: int = field(default=512, metadata={"help": "tokens kept per prompt+response (truncated at the end)",
                                                   "range": ">= 1"})
    # optimisation
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW step size η", "range": "> 0"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the training data", "range": "> 0"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; unset: num_train_epochs "
                                                                  "passes", "range": ">= 1"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "examples per device per micro-batch",
                                                                  "range": ">= 1"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step",
                                                                  "range": ">= 1"})
    warmup_steps: int = field(default=0, metadata={"help": "linear learning-rate warmup steps", "range": ">= 0"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm", "range": "> 0"})
    # bookkeeping
    logging_steps: int = field(default=10, metadata={"help": "optimizer steps between metric logs", "range": ">= 1"})
    eval_steps: int = field(default=0, metadata={"help": "steps between evaluations; 0 = at start and end only",
                                                 "range": ">= 0"})
    save_steps: int = field(default=100, metadata={"help": "steps between checkpoints", "range": ">= 1"})

    def __post_init__(self):
        self.check_store_source("data", self.data, required=False)  # neither: refused when the data is read
        check_ranges(self)


def trl_args(cfg: TrainConfig, run, has_eval: bool) -> dict:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig: the run's layout and precision."""
    from prefloop.hf import hardware_training_args

    # Held-out data is always evaluated before and after training; in between every eval_steps. "Before" is
    # TRL's eval_on_start, inside train(): an evaluate() called before train() marks the model prepared
    # (accelerate, evaluation mode), and train() then never wraps it in DDP, so gradients would not be
    # averaged over processes (seen as two processes ending with different weights).
    eval_strategy = "steps" if has_eval and cfg.eval_steps > 0 else "no"
    return dict(
        output_dir=str(run.checkpoints_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=-1 if cfg.max_steps is None else cfg.max_steps,  # transformers' -1: the epochs
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch_fused",  # one kernel per step: ~13x faster than the foreach AdamW on a CPU
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_on_start=has_eval and run.last_checkpoint() is None,
        eval_steps=cfg.eval_steps or None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",  # metrics.jsonl and tensorboard/ come from prefloop.hf.JsonlMetricsCallback
        max_length=cfg.max_length,
        dataset_num_proc=None,
        disable_tqdm=False,  # the Trainer's bar has a total: it shows the ETA
        **hardware_training_args(precision=run.precision),
    )


def start_offline(cfg, command: str, load):
    """The run directory (refused if it holds a run and --resume is not set) and the data, validated by
    `load(cfg)` before any model is loaded or anything written. -> (run, loaded data)."""
    from prefloop.config import to_dict
    from prefloop.run import start_run

    run = start_run(cfg.output_dir, command, to_dict(cfg), cfg.resume)
    return run, load(cfg)


def finish_offline(trainer, tokenizer, cfg, run, logger, has_eval: bool) -> Path:
    """Train, with the held-out set evaluated before (step 0) and after, then save a plain transformers
    model whose run.json says where it came from. -> OUT/final."""
    before, after = train_and_evaluate(trainer, run, has_eval=has_eval)
    logger.close()
    return save_final(trainer.model, tokenizer, cfg, run, {"eval_before": before, "eval_after": after})


def train_and_evaluate(trainer, run, has_eval: bool) -> tuple[dict, dict]:
    """Train (from the last checkpoint when resuming); -> the held-out metrics (before, after) training.
    Before: what eval_on_start logged at step 0 (see trl_args), or, on --resume, what the run recorded."""
    checkpoint = run.last_checkpoint()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if not has_eval:
        return {}, {}
    before = run.record.get("eval_before", {})
    if checkpoint is None:
        at_start = [h for h in trainer.state.log_history if h.get("step") == 0 and "eval_loss" in h]
        before = {k: v for k, v in at_start[0].items() if k != "step"}
    return before, trainer.evaluate()


def load_policy(name: str | None):
    """(model, tokenizer) with fp32 master weights; the hardware's precision applies through autocast.

    Pure-bf16 weights would round away AdamW updates of size η ≈ 1e-6 (bf16 keeps ~3 significant digits).
    """
    import torch

    from prefloop.models import load_causal_lm

    return load_causal_lm(name, dtype=torch.float32)


def lora_config(cfg):
    """The LoRA config of every policy trainer (SFT, DPO, online DPO, PPO); None without --lora."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=cfg.lora_targets())


def save_final(model, tokenizer, cfg, run, results: dict) -> Path:
    """Save the policy to OUT/final (plain `AutoModelForCausalLM.from_pretrained` loads it) and the results
    into run.json. Written aside and renamed in: a final/ is never half-written. Under several processes
    every one calls this: their weights are checked to agree, the main process writes, the others wait."""
    import shutil

    from prefloop import distributed

    out = run.final_dir
    distributed.check_replicas_agree(model)
    state_dict = full_state_dict(model)  # collective under FSDP: every process takes part
    if run.main:
        tmp = out.with_name(".final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from an interrupted save
        if cfg.lora and cfg.merge_lora and state_dict is None:
            model = model.merge_and_unload()
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # a resumed run replaces the final model it wrote itself
            shutil.rmtree(out)
        tmp.rename(out)
        print(f"[prefloop] final model: {out}")
    merged = bool(cfg.lora and cfg.merge_lora and state_dict is None)
    run.save(**results, status="finished", adapter=bool(cfg.lora) and not merged)
    distributed.wait_for_everyone()  # nobody returns (and reads final/) before it is there
    return out


def full_state_dict(model):
    """The whole weights of an FSDP2-sharded model (its parameters are DTensors, each process holding a
    shard), gathered to the main process's CPU; None for an ordinary model, whose save_pretrained reads
    its own weights. save_pretrained on the sharded model fails in safetensors ("invalid python storage",
    seen on an H200 under configs/accelerate_fsdp.yaml). A LoRA policy is then saved as its adapter."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def trainer_metrics(run):
    """(logger, callback): the run's metrics.jsonl + tensorboard/, fed by a Trainer's logs."""
    from prefloop.hf import JsonlMetricsCallback

    logger = run.metrics_logger()
    return logger, JsonlMetricsCallback(logger)
