"""`align dpo`: Direct Preference Optimization (Rafailov et al. 2023) on exported pairs (online: `align online-dpo`).

Offline DPO is TRL's `DPOTrainer` (tokenisation, reference handling, precomputed reference log-probs,
checkpoints, resume) with its loss replaced by `align.losses`: the same functions the online loop and
the closed-form bandit test use, plus ODPO margins from the judged strength.

The reference policy π_ref:
  * LoRA: the same weights with the adapter disabled (no second copy in memory);
  * full fine-tuning: a frozen copy of the initial policy, or, with `precompute_ref_log_probs`,
    log π_ref(y|x) computed once for every pair before training, so no reference model is kept.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import use_adapter

from align.logprobs import vocab_logits_fp32
from align.losses import log_ratio_difference, preference_loss


def add_response_head(model) -> None:
    """Patch `model` so that `model(input_ids=…, attention_mask=…, response_mask=m)` returns
    Σ_t log π(y_t | x, y<t) over the positions where m = 1, shape (B,).

    Only response positions are projected onto the vocabulary: the (N, V) logits of the response
    tokens, never the prompt's. TRL's fused head scores every position in Triton tiles; without
    Triton (on a CPU) its tiles run as plain torch ops and cost ~2x a plain forward (bench_dpo.py).
    With `return_hidden=True` it returns (log-probs (B,), the final hidden states at those N positions
    (N, H)), from which the held-out KL is computed without another pass through the body (`exact_kl`);
    `model(project=hidden)` projects such states in fp32, inside a forward call, where the head of a
    sharded model is whole. The model's own forward is untouched without either (generation, saving).
    Idempotent.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "_prefloop_response_head", False):
        return
    previous = base.forward

    def forward(self, *args, response_mask=None, return_hidden=False, project=None, **kwargs):
        if project is not None:
            return vocab_logits_fp32(self.get_output_embeddings(), project)  # (N, V)
        if response_mask is None:
            return previous(*args, **kwargs)
        kwargs.pop("labels", None)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # (B, T-1, H): state t predicts t+1
        targets = kwargs["input_ids"][:, 1:]  # (B, T-1)
        mask = response_mask[:, 1:].bool()  # (B, T-1)
        hidden = hidden[mask]  # (N, H), response positions only
        logits = vocab_logits_fp32(self.get_output_embeddings(), hidden)  # (N, V)
        token_logps = logits.gather(-1, targets[mask][:, None]).squeeze(-1) - logits.logsumexp(-1)  # (N,)
        logps = token_logps.new_zeros(mask.shape[0]).index_add(0, mask.nonzero()[:, 0], token_logps)  # (B,)
        return (logps, hidden) if return_hidden else logps

    base.forward = types.MethodType(forward, base)
    base._prefloop_response_head = True


def exact_kl(head, hidden: torch.Tensor, ref_head, ref_hidden: torch.Tensor, mask: torch.Tensor,
             chunk: int = 256) -> torch.Tensor:
    """Σ_t KL(π_θ(·|x, y<t) ‖ π_ref(·|x, y<t)) over each row's response positions, exact over the vocabulary:
    -> (B,). `hidden`, `ref_hidden`: the two models' final states at the N positions where `mask` (B, T-1)
    is set (the response head's `return_hidden`); `head`, `ref_head`: callables projecting (n, H) states
    onto the vocabulary (n, V) in fp32. `chunk` positions at a time, so that only (chunk, V) log-probs of
    each model are held."""
    kl = []
    for h, r in zip(hidden.split(chunk), ref_hidden.split(chunk)):
        logp = torch.log_softmax(head(h), -1)  # (n, V)
        ref_logp = torch.log_softmax(ref_head(r), -1)
        kl.append((logp.exp() * (logp - ref_logp)).sum(-1))  # (n,)
    kl = torch.cat(kl) if kl else hidden.new_zeros(0, dtype=torch.float32)
    return kl.new_zeros(mask.shape[0]).index_add(0, mask.nonzero()[:, 0], kl)


@dataclass
class PairCollator(DataCollatorForPreference):
    """TRL's preference collator (rows = [chosen; rejected]) that also carries each pair's margin (B,)."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        batch["margin"] = torch.tensor([float(e.get("margin") or 0.0) for e in examples])  # (B,)
        return batch


class PrefloopDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer whose loss comes from `align.losses` (a dict of loss functions, not an if-chain)."""

    def __init__(self, *args, loss_type: str = "sigmoid", margin_scale: float = 1.0, **kwargs):
        self.pref_loss_type = loss_type
        self.margin_scale = margin_scale
        super().__init__(*args, **kwargs)
        add_response_head(self.model)  # before `train()` wraps the forward in autocast

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "margin" not in self._signature_columns:
            self._signature_columns.append("margin")

    def compute_ref_log_probs(self, model, inputs):
        """log π_ref(y|x) of [chosen; rejected] as two (B,) tensors; also TRL's precompute pass."""
        return self._reference_pass(model, inputs).chunk(2)

    def _reference_pass(self, model, inputs, return_hidden: bool = False):
        """log π_ref(y|x) of every row (2B,), and with `return_hidden` its hidden states at the response
        positions (N, H)."""
        add_response_head(self.accelerator.unwrap_model(model))
        with torch.no_grad(), self._reference_context(), self.accelerator.autocast():
            return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         response_mask=inputs["completion_mask"], return_hidden=return_hidden)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        # The held-out KL needs a live reference: a frozen copy, or the base with the adapter disabled.
        with_kl = mode == "eval" and (self.ref_model is not None or self._is_peft)
        # 1. log π_θ(y|x): rows are [chosen; rejected], summed over response tokens
        completion_mask = inputs["completion_mask"]  # (2B, T)
        # The reference pass's autocast, also before `train()` has wrapped the model: π_θ and π_ref must
        # see identical numerics, or h ≠ 0 at initialisation and the "before" metrics are noise.
        with self.accelerator.autocast():
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        response_mask=completion_mask, return_hidden=with_kl)  # (2B,) [, (N, H)]
        logps, hidden = out if with_kl else (out, None)
        # 2. log π_ref(y|x): precomputed, a frozen copy, or the base with the adapter disabled
        ref_logps, ref_hidden = self._reference_logps(inputs, return_hidden=with_kl)  # (2B,), (N, H) or None
        # 3. the preference loss on h = Δ log-ratio (align/losses.py)
        lengths = completion_mask[:, 1:].sum(1)  # (2B,) response tokens
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        h = log_ratio_difference(self.pref_loss_type, chosen, rejected, ref_chosen, ref_rejected,
                                 *lengths.chunk(2))  # (B,)
        margin = self.margin_scale * inputs["margin"] if "margin" in inputs else None
        loss = preference_loss(self.pref_loss_type, h, self.beta, margin, self.label_smoothing).mean()
        # 4. diagnostics: implicit rewards r̂ = β·log(π_θ/π_ref) (DPO Eq. 5), preference accuracy, KL
        self._log_pair_metrics(mode, chosen.detach() - ref_chosen, rejected.detach() - ref_rejected)
        if with_kl:
            kl = self._held_out_kl(model, hidden, ref_hidden, completion_mask)  # (2B,)
            self._metrics[mode]["kl"].append(kl.mean().item())
        return loss

    @property
    def _is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def _reference_logps(self, inputs, return_hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log π_ref (2B,), with `return_hidden` the reference's hidden states at the response positions (N, H),
        else None); precomputed log-probs when the run has them (the hidden states still take a pass)."""
        model = self.ref_model if self.ref_model is not None else self.model
        if self.precompute_ref_logps:
            logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(self.accelerator.device)
            return logps, self._reference_pass(model, inputs, return_hidden=True)[1] if return_hidden else None
        out = self._reference_pass(model, inputs, return_hidden=return_hidden)
        return out if return_hidden else (out, None)

    def _reference_context(self):
        if self.ref_model is None and self._is_peft:
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _log_pair_metrics(self, mode: str, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor) -> None:
        chosen_rewards = self.beta * chosen_logratios  # (B,)
        rejected_rewards = self.beta * rejected_logratios
        gather = self.accelerator.gather_for_metrics
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),  # preference accuracy
        }
        for name, value in metrics.items():
            self._metrics[mode][name].append(gather(value).mean().item())

    @torch.no_grad()
    def _held_out_kl(self, model, hidden: torch.Tensor, ref_hidden: torch.Tensor, completion_mask) -> torch.Tensor:
        """Σ_t KL(π_θ ‖ π_ref) over each held-out row's response positions, exact over the vocabulary (2B,),
        from the hidden states the loss's two passes already made: no pass through the body of either model
        again (a pass per row of both, with every prompt position projected, was over half the evaluation
        on SmolLM2: bench/bench_dpo_eval.py). Projected in fp32: bf16 logits biased the KL upwards."""
        ref = self.ref_model if self.ref_model is not None else model

        def ref_head(states):
            with self._reference_context():
                return ref(project=states)

        return exact_kl(lambda states: model(project=states), hidden, ref_head, ref_hidden,
                        completion_mask[:, 1:].bool())


def main(argv: list[str]) -> int:
    from align.offline.dpo_config import DPOConfig
    from prefloop.config import parse_config

    train_offline(parse_config(DPOConfig, argv, prog="align dpo"))
    return 0


def train_offline(cfg, callbacks: list | None = None) -> Path:
    """Offline DPO; returns the directory of the final model (OUT/final, see prefloop.run). `callbacks` are
    extra TrainerCallbacks (the benchmark's step timer)."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from align.offline.preference_data import load_pairwise
    from align.train_common import (finish_offline, load_policy, lora_config, start_offline, trainer_metrics,
                                    trl_args)
    from prefloop.run import lineage

    # 1. the run directory and the data, validated before any model is loaded or anything written
    run, loaded = start_offline(cfg, "align dpo", load_pairwise)
    train_rows, eval_rows = loaded.rows, loaded.eval_rows
    print(f"[prefloop] dpo: {len(train_rows)} training pairs, {len(eval_rows)} held-out, loss {cfg.loss_type}, "
          f"β={cfg.beta}, {'LoRA' if cfg.lora else 'full fine-tuning'}")
    # 2. policy (TRL builds π_ref: a frozen copy, the adapter-disabled base, or precomputed log-probs)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model)
    run.save(**lineage(cfg.model), data=loaded.source, skipped=loaded.skipped,
             train_pairs=len(train_rows), eval_pairs=len(eval_rows))
    logger, metrics = trainer_metrics(run)
    args = TRLDPOConfig(**trl_args(cfg, run, has_eval=bool(eval_rows)), beta=cfg.beta,
                        label_smoothing=cfg.label_smoothing, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
                        prediction_loss_only=True, truncation_mode="keep_start")
    trainer = PrefloopDPOTrainer(
        model=model, args=args, processing_class=tokenizer,
        data_collator=PairCollator(pad_token_id=tokenizer.pad_token_id, max_length=cfg.max_length),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        peft_config=lora_config(cfg), callbacks=[metrics, *(callbacks or [])],
        loss_type=cfg.loss_type, margin_scale=cfg.margin_scale)
    # 3. train (held-out pairs evaluated before and after) and save
    return finish_offline(trainer, tokenizer, cfg, run, logger, has_eval=bool(eval_rows))
