"""`labeling arena`: make a project an arena (its models and bounds), or show an arena's settings.

    labeling arena create --project chat --models small=smollm2-135m-instruct \\
        big=http://gpu-box:8000/v1#Qwen/Qwen2.5-7B-Instruct --max-new-tokens 512
    labeling arena show --project chat
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefloop.config import check_ranges, parse_config
from prefloop.fields import store_field


@dataclass
class ArenaConfig:
    """Create or update an arena project (two anonymous models answer the annotator's prompt live), or show one."""

    action: str = field(default="show", metadata={"help": "what to do", "choices": ["create", "show"]})
    project: str = field(default="", metadata={"help": "the project (created as a pairwise project if new)"})
    models: list[str] = field(default_factory=list, metadata={
        "help": "the models that answer, each NAME=TARGET or TARGET, TARGET a local directory, HF id or the embedded "
                "default, or an OpenAI-compatible endpoint http(s)://HOST:PORT/v1[#SERVED_MODEL]; at least two"})
    reveal_models: bool = field(default=True, metadata={"help": "show the annotator which model wrote A and B "
                                                                "after the vote (never before)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest answer, in tokens", "range": "[1, 4096]"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature T > 0", "range": "> 0"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold", "range": "(0, 1]"})
    max_prompt_chars: int = field(default=4000, metadata={"help": "longest prompt an annotator may type",
                                                          "range": "[1, 32000]"})
    per_minute: int = field(default=6, metadata={"help": "comparisons one annotator may start per minute",
                                                 "range": "[1, 600]"})
    api_key_env: str | None = field(default=None, metadata={
        "help": "environment variable of `labeling serve` holding the endpoints' bearer token "
                "(the key is never stored)"})
    guidelines: str | None = field(default=None, metadata={"help": "markdown file with guidelines (new project)"})
    criteria: list[str] = field(default_factory=list, metadata={"help": "criteria rated 1..5 (new project)"})
    store: str | None = store_field()

    def __post_init__(self):
        if not self.project:
            raise ValueError("--project is required")
        check_ranges(self)


def main(argv: list[str]) -> int:
    from labeling.arena import create_arena, arena_settings
    from labeling.commands import _positionals
    from labeling.db import open_store
    from prefloop.data import read_text

    cfg = parse_config(ArenaConfig, _positionals(argv, ["--action"]), prog="labeling arena")
    engine = open_store(cfg.store, create=False)
    if cfg.action == "create":
        from labeling.arena import parse_model_spec
        from prefloop.models import check_model

        for spec in map(parse_model_spec, cfg.models):  # a mistyped local model is refused now, not at the first prompt
            if not spec.is_endpoint:
                check_model(spec.target)
        settings = create_arena(engine, cfg.project, cfg.models, reveal_models=cfg.reveal_models,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_prompt_chars=cfg.max_prompt_chars, per_minute=cfg.per_minute,
                                api_key_env=cfg.api_key_env, criteria=cfg.criteria,
                                guidelines=read_text(cfg.guidelines, "guidelines") if cfg.guidelines else "")
        print(f"arena {cfg.project!r}: {len(settings.models)} models")
    else:
        settings = arena_settings(engine, cfg.project)
    for m in settings.models:
        print(f"  {m['name']:<24} {m['target']}" + (f"  (model {m['served']})" if m.get("served") else ""))
    print(f"  answers up to {settings.max_new_tokens} tokens at T={settings.temperature}, top_p={settings.top_p}; "
          f"prompts up to {settings.max_prompt_chars} characters; {settings.per_minute} comparisons a minute "
          f"per annotator; names {'shown' if settings.reveal_models else 'never shown'} after the vote")
    return 0
