"""Configuration of `align ppo`: one dataclass, every field with the paper's symbol.

Critic choice (`critic`):
  value_head    a linear head V(s_t) on the policy's own last hidden state. One model in
                memory, one forward pass gives log pi and V; but the head starts from
                nothing (V = 0), and value-loss gradients flow into the shared trunk
                (scaled by vf_coef), where they can disturb the policy [N-details].
  reward_model  a separate critic initialised from the reward model (backbone + scalar
                head), as in InstructGPT [Ouyang et al. 2022, §3.5]. It already scores
                responses, so early value estimates are informed and policy and value
                losses do not share parameters; the price is a second model (weights,
                gradients, optimizer state) and a second forward/backward per minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from align.onpolicy.config import OnPolicyConfig, is_callable_spec
from prefloop.config import config_field as _f

CRITICS = ("value_head", "reward_model")
KL_ESTIMATOR_NAMES = ("k1", "k2", "k3")


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO with a KL penalty against a reward model (Ziegler et al. 2019; Ouyang et al. 2022)."""

    output_dir: str = _f("runs/ppo", "the run: final/ (the policy), critic/, checkpoints/, metrics.jsonl, "
                                     "tensorboard/, samples.jsonl, plots, run.json")
    batch_size: int = _f(8, "episodes (prompt, response) sampled per step per process (N in [PPO] Alg. 1)", range=">= 1")
    missing_eos_penalty: float | None = _f(None, "subtracted from r(x, y) when the response never emits EOS "
                                                 "[N-details: 'penalise non-terminated responses']", range=">= 0")

    # --- reward shaping [Ziegler eq. 2] ---------------------------------------------------
    beta: float = _f(0.05, "KL coefficient beta in R = r - beta * log(pi / pi_ref); the initial beta if adaptive", range=">= 0")
    adaptive_kl: bool = _f(False, "adapt beta with Ziegler's proportional controller towards target_kl")
    target_kl: float = _f(6.0, "KL_target of the adaptive controller, nats per response [Ziegler §2.2]", range="> 0")
    kl_horizon: int = _f(10000, "horizon H (episodes) of the adaptive controller: K_beta = episodes / H", range=">= 1")
    kl_estimator: str = _f("k1", "per-token KL estimator in the penalty [Schulman, 'Approximating KL']: "
                                 "k1 = log pi/pi_ref, k2 = (log r)^2/2, k3 = (r - 1) - log r",
                           choices=list(KL_ESTIMATOR_NAMES))
    score_norm: bool = _f(False, "normalise r(x, y) by the running mean and std of scores seen so far")
    score_clip: float | None = _f(None, "clip r(x, y) (after normalisation) to [-c, c]", range="> 0")

    # --- advantages and losses [GAE, PPO] ----------------------------------------------------
    gamma: float = _f(1.0, "discount gamma in GAE", range="[0, 1]")
    lam: float = _f(0.95, "GAE lambda: bias/variance trade-off of the advantage estimate", range="[0, 1]")
    whiten_advantages: bool = _f(True, "whiten advantages A to mean 0, std 1 per batch")
    cliprange: float = _f(0.2, "policy clip range epsilon in clip(ratio, 1 - eps, 1 + eps) [PPO eq. 7]", range="> 0")
    cliprange_value: float = _f(0.2, "value clip range eps_v: V may move at most eps_v from V_old", range="> 0")
    vf_coef: float = _f(0.1, "value-loss coefficient c_1 in L = L_clip + c_1 L_V [PPO eq. 9]", range=">= 0")
    ent_coef: float = _f(0.0, "entropy bonus coefficient c_2 [PPO eq. 9] (RLHF usually relies on the KL instead)", range=">= 0")

    # --- optimisation ------------------------------------------------------------------------
    num_iterations: int = _f(4, "optimisation passes K (PPO's epochs) over each batch of episodes [PPO Alg. 1]", range=">= 1",
                             aliases=("ppo_epochs",))
    mini_batch_size: int = _f(4, "episodes per optimizer step per process (M in [PPO] Alg. 1); divides batch_size", range=">= 1")
    gradient_accumulation_steps: int = _f(1, "micro-batches per minibatch (memory only; same update)", range=">= 1")
    adam_eps: float = _f(1e-5, "Adam epsilon (1e-5 as in the PPO reference code, not PyTorch's 1e-8)", range="> 0")

    # --- LoRA and the critic ---------------------------------------------------------------------
    lora_target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                         "down_proj"],
                                        "module names that get LoRA adapters ('all-linear': every linear "
                                        "layer but the LM head)")
    critic: str = _f("value_head", "value function V(s_t): a head on the policy, or a separate model "
                                   "initialised from the reward model (see the module docstring)",
                     choices=list(CRITICS))
    critic_model: str | None = _f(None, "sequence-classification model to initialise the separate critic "
                                        "from (default: the reward-model directory)")

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"mini_batch_size {self.mini_batch_size} must divide batch_size {self.batch_size}")
        if self.mini_batch_size % self.sampling_shards:
            raise ValueError(f"sampling_shards {self.sampling_shards} must divide mini_batch_size {self.mini_batch_size}")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"gradient_accumulation_steps {self.gradient_accumulation_steps} must divide "
                             f"mini_batch_size {self.mini_batch_size}")
        if self.kl_estimator not in KL_ESTIMATOR_NAMES:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATOR_NAMES)}")
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {', '.join(CRITICS)}")
        if self.critic == "reward_model" and self.critic_model is None:
            if is_callable_spec(self.reward_model):
                raise ValueError("critic 'reward_model' needs a model: the reward is a Python callable, "
                                 "so give --critic-model DIR")
            self.critic_model = self.reward_model
