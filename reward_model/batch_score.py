"""`reward-model score`: JSONL of prompt/response rows in, the same rows plus `reward` out."""

from __future__ import annotations

from pathlib import Path

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


def check_output(cfg: ScoreConfig) -> None:
    """The output follows prefloop.outputs' rule: a new file (a datasets directory: a new one), an existing
    file only with --overwrite, never the input; refused in one line before the model loads."""
    from prefloop.data import detect_format
    from prefloop.outputs import check_output_dir, check_output_file

    if Path(cfg.output).suffix:
        check_output_file(cfg.output, "--output", replace=cfg.overwrite, overwrite_flag="--overwrite",
                          inputs={"--input": cfg.input})
        detect_format(cfg.output)  # an unknown suffix, now rather than after scoring
    else:  # a path without a suffix is a datasets directory (prefloop.data.write_records)
        check_output_dir(cfg.output, "--output")


def score_file(cfg: ScoreConfig) -> int:
    from prefloop.data import write_records
    from reward_model.scorer import RewardScorer, load_reward

    check_output(cfg)
    rows, prompts, responses = read_pairs(cfg)
    reward = load_reward(cfg.model, batch_size=cfg.batch_size)
    if isinstance(reward, RewardScorer) and reward.n_heads > 1:
        means, stds = reward.score_with_std(prompts, responses)
        out = [{**row, "reward": m, "reward_std": s} for row, m, s in zip(rows, means, stds)]
    else:
        out = [{**row, "reward": r} for row, r in zip(rows, _scores(reward, cfg.model, prompts, responses))]
    write_records(out, cfg.output)  # written whole to a temp file, then renamed
    return len(out)


def _scores(reward, spec: str, prompts: list, responses: list) -> list[float]:
    """One finite number per response from `reward`, or one line naming the reward (a `module:function`
    is the operator's code: what it raises or returns is reported, not shown as our traceback)."""
    import math

    try:
        scores = list(reward(prompts, responses))
        values = [float(s) for s in scores]
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise InputError(f"reward {spec}: failed on {len(responses)} responses ({type(err).__name__}: {err})") from None
    if len(values) != len(responses) or not all(map(math.isfinite, values)):
        raise InputError(f"reward {spec}: expected one finite number per response ({len(responses)}), "
                         f"got {str(scores)[:80]}")
    return values


def main(argv: list[str]) -> int:
    cfg = parse_config(ScoreConfig, argv, prog="reward-model score")
    n = score_file(cfg)
    print(f"[reward-model] scored {n} rows -> {cfg.output}")
    return 0
