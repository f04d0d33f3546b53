"""`align sft`: supervised fine-tuning (TRL's SFTTrainer) on the `sft` export, the usual first stage.

Rows are {"messages": [..., assistant reply]} or prompt/completion; both become prompt/completion
pairs so that the loss −log π_θ(y|x) covers the reply only (InstructGPT's SFT stage, Ouyang et al. 2022).
"""

from __future__ import annotations

from pathlib import Path


def main(argv: list[str]) -> int:
    from align.sft_config import SFTConfig
    from prefloop.config import parse_config

    train_sft(parse_config(SFTConfig, argv, prog="align sft"))
    return 0


def train_sft(cfg) -> Path:
    """Fine-tune; returns the directory of the final model (output_dir/final)."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from align.preference_data import load_sft, train_eval_rows
    from align.train_common import (load_policy, lora_config, metrics_callback, resume_checkpoint, save_final,
                                     trl_args)
    from prefloop.config import to_dict
    from prefloop.hardware import detect
    from prefloop.models import resolve_model

    # 1. data, validated before any model is loaded
    loaded = load_sft(cfg)
    train_rows, eval_rows = train_eval_rows(loaded.rows, cfg, "sft")
    print(f"[prefloop] sft: {len(train_rows)} training examples, {len(eval_rows)} held-out, "
          f"{'LoRA' if cfg.lora else 'full fine-tuning'}")
    # 2. model and trainer
    model, tokenizer = load_policy(cfg.model)
    args = TRLSFTConfig(**trl_args(cfg, has_eval=bool(eval_rows)), completion_only_loss=cfg.completion_only_loss,
                        packing=cfg.packing, prediction_loss_only=True)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         peft_config=lora_config(cfg), callbacks=[metrics_callback(cfg.output_dir)])
    # 3. train, with the held-out loss before and after
    checkpoint = resume_checkpoint(cfg)
    before = trainer.evaluate() if eval_rows and checkpoint is None else {}
    trainer.train(resume_from_checkpoint=checkpoint)
    after = trainer.evaluate() if eval_rows else {}
    # 4. save a plain transformers model with where it came from
    metadata = {"command": "align sft", "base_model": resolve_model(cfg.model), "config": to_dict(cfg),
                "data": loaded.source, "train_examples": len(train_rows), "eval_examples": len(eval_rows),
                "hardware": detect().describe(), "eval_before": before, "eval_after": after}
    return save_final(trainer.model, tokenizer, cfg, metadata)
