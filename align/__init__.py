"""Policy alignment: SFT, PPO with a KL penalty, DPO (offline and online)."""
