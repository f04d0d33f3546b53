"""bf16 autocast must learn what fp32 learns: one DPO step of the real trainer (`PrefloopDPOTrainer`) on the
tiny model with a LoRA adapter, in bf16 autocast and in fp32 from the same weights, gives the same per-pair
log-ratio differences h, implicit reward margins, loss and LoRA gradients within the tolerances below.

What keeps them together is where the precision is kept (TRL's practice): fp32 master weights (LoRA
parameters and AdamW state included), logits upcast to fp32 before the log-softmax and the gather
(`align.offline.dpo_trainer.add_response_head`), the reference pass under the same autocast as the policy pass,
the sums over tokens and the loss in fp32. A log-softmax in bf16 rounds log π(y_t|x) near −log V ≈ −10.8
to steps of 1/16 and moves h by up to 1.8 here: the test fails then (measured, see the tolerances).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_helpers import TOPICS, pair_row  # noqa: E402

BETA = 1.0  # large, so that an error in h shows in the loss and in the gradient's weight σ(−β·h)
# Tolerances, bf16 autocast against fp32. Measured on this tiny model (max |Δh|, |Δloss|, relative gradient
# error): 0.04, 1e-4, 0.075 as the trainer computes; 1.8, 0.13, 0.28 with the log-softmax and gather in bf16.
H_ABS = 0.1  # per-pair |Δh| in nats
LOSS_ABS = 0.01
GRAD_REL = 0.15  # ‖g_bf16 − g_fp32‖ / ‖g_fp32‖ over all LoRA parameters


def dpo_step(model_dir: str, out: Path, precision: str) -> dict:
    """h, implicit reward margins, loss and LoRA gradients of one step on 8 pairs, with a non-zero adapter
    (LoRA's B starts at 0, which would make π_θ = π_ref and h = 0 exactly in any precision)."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from align.offline.dpo_config import DPOConfig
    from align.offline.dpo_trainer import PairCollator, PrefloopDPOTrainer
    from align.train_common import load_policy, lora_config

    torch.manual_seed(0)
    model, tokenizer = load_policy(model_dir)
    args = TRLDPOConfig(output_dir=str(out), per_device_train_batch_size=8, max_length=64, beta=BETA,
                        bf16=precision == "bf16", use_cpu=True, report_to="none", seed=0)
    trainer = PrefloopDPOTrainer(model=model, args=args, processing_class=tokenizer,
                                 data_collator=PairCollator(pad_token_id=tokenizer.pad_token_id, max_length=64),
                                 train_dataset=Dataset.from_list([pair_row(t) for t in TOPICS[:8]]),
                                 peft_config=lora_config(DPOConfig(lora=True, lora_r=8, lora_alpha=16)))
    lora = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora.items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    assert all(p.dtype == torch.float32 for p in lora.values())  # fp32 master weights
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    margins = trainer._metrics["train"]["rewards/margins"][-1]
    ref = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    with trainer.accelerator.autocast():
        policy = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               response_mask=batch["completion_mask"])
    ratios = (policy - ref).detach().chunk(2)
    return {"loss": loss.item(), "margins": margins, "h": ratios[0] - ratios[1], "dtype": loss.dtype,
            "grad": torch.cat([p.grad.flatten() for p in lora.values()])}


@pytest.fixture(scope="module")
def steps(tiny_model_dir, tmp_path_factory):
    torch.set_num_threads(1)  # a few dozen columns gain nothing from more threads on a shared machine
    return {precision: dpo_step(tiny_model_dir, tmp_path_factory.mktemp(precision), precision)
            for precision in ("fp32", "bf16")}


def test_one_dpo_step_agrees_between_bf16_autocast_and_fp32(steps):
    fp32, bf16 = steps["fp32"], steps["bf16"]
    assert fp32["h"].abs().mean() > 0.5  # the adapter moved π_θ well away from π_ref: h is not noise
    assert (bf16["h"] - fp32["h"]).abs().max() < H_ABS
    assert bf16["margins"] == pytest.approx(fp32["margins"], abs=BETA * H_ABS)
    assert bf16["loss"] == pytest.approx(fp32["loss"], abs=LOSS_ABS)
    assert bf16["dtype"] == torch.float32  # the reduction ran in fp32
    assert (bf16["grad"] - fp32["grad"]).norm() < GRAD_REL * fp32["grad"].norm()



def test_onpolicy_log_prob_path_projects_in_fp32_under_bf16_autocast(tiny_model_dir):
    """PPO's, GRPO's, RLOO's and online DPO's log-probs (align.onpolicy.rollout.response_logits) project the response
    hidden states onto the vocabulary in fp32 under bf16 autocast, as DPO's do: the logits equal an fp32
    projection of the same hidden states, unlike a bf16 one, which at a trained LM's logit size (std ~10)
    rounds a token's log-prob by up to ~0.06 and a 40-token sum by ~0.3 nats."""
    from align.onpolicy.rollout import response_logits, token_logprobs
    from prefloop.models import load_causal_lm

    torch.set_num_threads(1)
    model, _ = load_causal_lm(tiny_model_dir, dtype=torch.float32, device="cpu")
    with torch.no_grad():  # an untied head with logits of a trained LM's size, not a random model's ~0
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        head.weight.copy_(model.get_output_embeddings().weight * 60)
        model.lm_head = head
    ids = torch.randint(10, 2000, (4, 52), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, hidden = response_logits(model, ids, mask, 12)  # (4, 40, V), (4, 40, H)
        bf16_logits = head(hidden)  # the projection under autocast: what the path must not do
    exact = torch.nn.functional.linear(hidden.float(), head.weight)  # (4, 40, V)
    targets = ids[:, 12:]
    assert logits.dtype == torch.float32 and logits.std() > 5
    torch.testing.assert_close(logits, exact, rtol=0, atol=1e-4)
    drift = (token_logprobs(bf16_logits, targets) - token_logprobs(exact, targets)).abs().sum(1)  # (4,)
    assert drift.max() > 0.1  # a bf16 projection would fail the assertion above by this much per sequence
