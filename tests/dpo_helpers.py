"""Data for the `align dpo` / `align sft` tests: preferences with a pattern a tiny model can learn.

Every chosen response is a polite answer and every rejected one a refusal, about the prompt's topic;
held-out prompts use other topics, so held-out accuracy measures generalisation, not memory.
"""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = ["cats", "dogs", "rain", "coffee", "trains", "music", "chess", "bread", "rivers", "stars", "tea",
          "bikes", "clouds", "books", "salt", "maps", "glass", "paper", "snow", "wind", "honey", "bees",
          "ships", "lamps", "boots", "clocks", "rice", "milk", "wolves", "owls"]


def pair_row(topic: str, margin: float = 1.0) -> dict:
    return {"prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
            "chosen": [{"role": "assistant", "content": f"Sure! Here is a short, helpful answer about {topic}."}],
            "rejected": [{"role": "assistant", "content": f"No. I will not talk about {topic}."}],
            "margin": margin, "tie": False, "prompt_id": TOPICS.index(topic), "annotators": 1}


def sft_row(topic: str) -> dict:
    prompt = [{"role": "user", "content": f"Tell me about {topic}."}]
    return {"messages": prompt + [{"role": "assistant",
                                   "content": f"Sure! Here is a short, helpful answer about {topic}."}]}


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def params(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def load_weights(path) -> dict:
    from transformers import AutoModelForCausalLM

    return params(AutoModelForCausalLM.from_pretrained(str(path)))
