"""Bradley-Terry / Plackett-Luce reward models and the RewardScorer everything else uses."""
