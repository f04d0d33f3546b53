"""`align eval`: policies against a reference on held-out prompts (win rates, reward, KL, best-of-N, the
reward-vs-KL plot) and the report it writes to metrics.jsonl and the trackers."""
