"""`reward-model score`: JSONL of prompt/response rows in, the same rows plus `reward` out."""

from __future__ import annotations

from prefloop.config import parse_config
from prefloop.errors import InputError
from reward_model.eval_config import ScoreConfig


def read_pairs(cfg: ScoreConfig) -> tuple[list[dict], list, list]:
    """(rows, prompts, responses), every row checked before anything is scored."""
    from prefloop.data import iter_records
    from reward_model.encoding import as_conversation, as_messages

    rows, prompts, responses = [], [], []
    for number, row in iter_records(cfg.input):
        for name in (cfg.prompt_field, cfg.response_field):
            if name not in row:
                raise InputError(f"{cfg.input}: row {number}: missing field '{name}'")
        try:
            prompts.append(as_conversation(row[cfg.prompt_field]))
            responses.append(as_messages(row[cfg.response_field]))
        except ValueError as err:
            raise InputError(f"{cfg.input}: row {number}: {err}") from err
        rows.append(row)
    if not rows:
        raise InputError(f"{cfg.input}: no rows to score (empty file)")
    return rows, prompts, responses


def score_file(cfg: ScoreConfig) -> int:
    from prefloop.data import write_records
    from reward_model.scorer import RewardScorer, load_reward

    rows, prompts, responses = read_pairs(cfg)
    reward = load_reward(cfg.model, batch_size=cfg.batch_size)
    if isinstance(reward, RewardScorer) and reward.n_heads > 1:
        means, stds = reward.score_with_std(prompts, responses)
        out = [{**row, "reward": m, "reward_std": s} for row, m, s in zip(rows, means, stds)]
    else:
        out = [{**row, "reward": float(r)} for row, r in zip(rows, reward(prompts, responses))]
    write_records(out, cfg.output)  # written whole to a temp file, then renamed
    return len(out)


def main(argv: list[str]) -> int:
    cfg = parse_config(ScoreConfig, argv, prog="reward-model score")
    n = score_file(cfg)
    print(f"[reward-model] scored {n} rows -> {cfg.output}")
    return 0
