"""`labeling generate`: sample N candidates per prompt from one or more models.

Resumable: a prompt that already has N candidates from (model, round) is skipped,
and each batch is committed as it finishes, so an interrupted run loses at most one
batch and picks up where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from labeling.db import get_project, session_scope
from labeling.importer import add_candidate
from labeling.models import Candidate, Prompt
from prefloop.generation import SamplingConfig


@dataclass
class GenerateReport:
    model: str
    prompts_done: int = 0
    prompts_skipped: int = 0
    candidates_added: int = 0
    tokens: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return (f"{self.model}: {self.candidates_added} candidates for {self.prompts_done} prompts "
                f"({self.prompts_skipped} already done), {self.tokens} tokens at {rate:.1f} tokens/s")


def pending_prompts(engine: Engine, project_name: str, model: str, round: int, n: int,
                    split: str | None = None, limit: int | None = None) -> tuple[list[tuple[int, list, int]], int]:
    """[(prompt_id, messages, candidates still needed)] and the number of prompts already complete."""
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        have = (select(Candidate.prompt_id, func.count(Candidate.id).label("n"))
                .where(Candidate.model == model, Candidate.round == round)
                .group_by(Candidate.prompt_id).subquery())
        query = (select(Prompt.id, Prompt.messages, have.c.n)
                 .outerjoin(have, have.c.prompt_id == Prompt.id)
                 .where(Prompt.project_id == project.id).order_by(Prompt.id))
        if split is not None:
            query = query.where(Prompt.split == split)
        todo, done = [], 0
        for prompt_id, messages, count in session.exec(query):
            missing = n - (count or 0)
            if missing > 0:
                todo.append((prompt_id, messages, missing))
            else:
                done += 1
        return (todo[:limit] if limit else todo), done


def generate_candidates(engine: Engine, project_name: str, model_name: str, *, n: int = 2, round: int = 0,
                        sampling: SamplingConfig | None = None, batch_size: int = 8, split: str | None = None,
                        limit: int | None = None, progress: bool = True) -> GenerateReport:
    import time

    from tqdm.auto import tqdm

    import torch

    from prefloop.generation import generate_responses
    from prefloop.models import load_causal_lm

    sampling = sampling or SamplingConfig()
    todo, done = pending_prompts(engine, project_name, model_name, round, n, split, limit)
    report = GenerateReport(model=model_name, prompts_skipped=done)
    if not todo:
        return report
    model, tokenizer = load_causal_lm(model_name)
    model.eval()
    # One row per missing candidate: the n samples of a prompt share a batch when they fit.
    jobs = [(prompt_id, messages) for prompt_id, messages, missing in todo for _ in range(missing)]
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"generate {model_name}", unit="cand", disable=not progress)
    for i in range(0, len(jobs), batch_size):
        batch = jobs[i:i + batch_size]
        cfg = SamplingConfig(**{**sampling.as_dict(), "seed": None if sampling.seed is None else sampling.seed + i})
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        out = generate_responses(model, tokenizer, [messages for _, messages in batch], cfg.max_new_tokens,
                                 cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        report.tokens += int(out.response_mask.sum())
        _store_batch(engine, batch, out, model_name, round, cfg, report)
        bar.update(len(batch))
    bar.close()
    report.prompts_done = len(todo)
    report.seconds = time.perf_counter() - start
    return report


def _store_batch(engine, batch, out, model_name, round, cfg, report) -> None:
    with session_scope(engine) as session:
        for (prompt_id, _), text, finished in zip(batch, out.texts, out.terminated.tolist()):
            text = text.strip()
            if not text:
                report.notes.append(f"prompt {prompt_id}: empty response not stored")
                continue
            gen_config = {**cfg.as_dict(), "finished": finished}
            if add_candidate(session, prompt_id, text, model_name, round, gen_config):
                report.candidates_added += 1
