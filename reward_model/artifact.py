"""The on-disk reward model: a plain transformers sequence-classification directory plus metadata.

    out_dir/
      config.json, model.safetensors, tokenizer files   <- AutoModelForSequenceClassification loads these
      reward_model.json                                 <- normalisation, heads, data snapshot, config

`num_labels` = number of ensemble heads (1 for a single reward). The normalisation (offset,
scale per head) is also copied into config.json as `reward_offset` / `reward_scale`, so a
plain-transformers user gets the same reward as RewardScorer with `(logits - offset) / scale`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

METADATA_FILE = "reward_model.json"
FORMAT = "prefloop-reward-model/1"


def save_reward_model(model, tokenizer, out_dir: str | Path, metadata: dict) -> Path:
    """Write into a sibling temp dir, then move in; reward_model.json goes last and marks a complete save."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    heads = int(model.config.num_labels)
    offset = [float(x) for x in metadata.get("reward_offset", [0.0] * heads)]
    scale = [float(x) for x in metadata.get("reward_scale", [1.0] * heads)]
    if len(offset) != heads or len(scale) != heads:
        raise ValueError(f"normalisation has {len(offset)} offsets / {len(scale)} scales for {heads} heads")
    model.config.reward_offset, model.config.reward_scale = offset, scale
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"format": FORMAT, **metadata, "n_heads": heads, "reward_offset": offset, "reward_scale": scale}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if not out_dir.exists():
            tmp.rename(out_dir)
        else:  # a training run's directory: keep its checkpoints/, logs/ and data/
            out_dir.joinpath(METADATA_FILE).unlink(missing_ok=True)  # an unfinished save never looks finished
            for path in sorted(tmp.iterdir(), key=lambda p: p.name == METADATA_FILE):  # metadata last
                os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_metadata(model_dir: str | Path) -> dict:
    """reward_model.json, or {} for a sequence-classification model trained elsewhere (e.g. TRL)."""
    path = Path(model_dir) / METADATA_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())
