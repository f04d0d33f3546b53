"""Policy alignment algorithms, a room for each job (the whole loop that drives them is `loop`, above):

    offline/     SFT and DPO on exported data (TRL's trainers with our losses), the preference-data loader
    onpolicy/    the one on-policy loop and its engine; PPO, online DPO, GRPO and RLOO supply only their maths
    graders/     pure reward functions for reinforcement fine-tuning, their budget and mixes; GeneralPoints tasks
    evaluation/  policies against a reference: win rates, reward, KL, best-of-N

Shared by the rooms, at this level: the preference losses (losses.py), the training plumbing
(train_common.py) and prompt loading (prompts.py). Imports run down: evaluation -> onpolicy -> graders,
and every room -> these shared modules; align reaches the store only through labeling's public functions.
"""
