"""`align sft`: supervised fine-tuning (TRL's SFTTrainer) on the `sft` export, the usual first stage.

Rows are {"messages": [..., assistant reply]} or prompt/completion; both become prompt/completion
pairs so that the loss −log π_θ(y|x) covers the reply only (InstructGPT's SFT stage, Ouyang et al. 2022).
"""

from __future__ import annotations

from pathlib import Path


def main(argv: list[str]) -> int:
    from align.offline.sft_config import SFTConfig
    from prefloop.config import parse_config

    train_sft(parse_config(SFTConfig, argv, prog="align sft"))
    return 0


def train_sft(cfg) -> Path:
    """Fine-tune; returns the directory of the final model (OUT/final, see prefloop.run)."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from align.offline.preference_data import load_sft
    from align.train_common import (finish_offline, load_policy, lora_config, start_offline, trainer_metrics,
                                    trl_args)
    from prefloop.run import lineage

    # 1. the run directory and the data, validated before any model is loaded or anything written
    run, loaded = start_offline(cfg, "align sft", load_sft)
    train_rows, eval_rows = loaded.rows, loaded.eval_rows
    print(f"[prefloop] sft: {len(train_rows)} training examples, {len(eval_rows)} held-out, "
          f"{'LoRA' if cfg.lora else 'full fine-tuning'}")
    # 2. model and trainer
    model, tokenizer = load_policy(cfg.model)
    run.save(**lineage(cfg.model), data=loaded.source, train_examples=len(train_rows),
             eval_examples=len(eval_rows))
    logger, metrics = trainer_metrics(run)
    args = TRLSFTConfig(**trl_args(cfg, run, has_eval=bool(eval_rows)), completion_only_loss=cfg.completion_only_loss,
                        packing=cfg.packing, prediction_loss_only=True)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         peft_config=lora_config(cfg), callbacks=[metrics])
    # 3. train (held-out loss evaluated before and after) and save
    return finish_offline(trainer, tokenizer, cfg, run, logger, has_eval=bool(eval_rows))
