"""On-policy alignment: one loop (loop.py) on one toolkit (toolkit.py) and one engine (engine.py: accelerate
prepares the models, DDP/FSDP2/DeepSpeed reduce and shard), with sampling and log-probs (rollout.py).
PPO (ppo_*, critic.py), online DPO (online_dpo_*), GRPO and RLOO (grpo_*, rft_data.py) supply only their
mathematics: advantages and a loss from a scored rollout."""
