"""Where pretrained weights come from (Stable Diffusion, CLIP; `reachable` also guards the Inception download).

Weights are found before anything is loaded: a local folder, or a hub id already in the Hugging Face
cache; only when neither holds them and the hub answers within seconds is anything downloaded. Offline,
a missing model is one line saying what to download, not minutes of retries.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import UserError

HUB_TIMEOUT_S = 5.0
FLAT_MODEL_FILES = ("*.json", "*.txt", "*.safetensors")  # a transformers model folder without sub-folders


def missing_weights_message(model: str, kind: str = "Stable Diffusion", flag: str = "--model-path") -> str:
    return (f"no {kind} weights for '{model}' were found locally (offline or not cached); "
            f"download them on a connected machine (huggingface-cli download {model} --local-dir DIR) and "
            f"pass {flag} DIR, or copy the Hugging Face cache into $HF_HOME")


def _looks_like_path(model: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything that exists, or is spelled like a path, is a path."""
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1


def reachable(url: str) -> bool:
    """Whether url's host accepts a connection within HUB_TIMEOUT_S (offline, downloads would hang or retry)."""
    parts = urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=HUB_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _hub_reachable() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and reachable(constants.ENDPOINT)


def resolve_model(model: str, parts: tuple[str, ...], kind: str = "Stable Diffusion",
                  flag: str = "--model-path") -> Path:
    """A local folder holding the sub-folders `parts` (a diffusers pipeline), or with no parts a flat
    transformers model (config.json at the top): the folder itself, the cached snapshot of a hub id, or a
    fresh download when the hub can be reached. Raises a one-line UserError otherwise."""
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise UserError(f"model folder {model} does not exist")
        if not path.is_dir():
            inside = f" (with {', '.join(parts)})" if parts else " (with config.json)"
            raise UserError(f"{flag} {model} is a file; pass the {kind} folder{inside}")
        if parts:
            missing = [f"{p}/" for p in parts if not (path / p).is_dir()]
        else:
            missing = [] if (path / "config.json").is_file() else ["config.json"]
        if missing:
            raise UserError(f"{model} is not a {'diffusers ' if parts else ''}{kind} folder "
                            f"(missing {', '.join(missing)})")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = [f"{p}/*" for p in parts] + ["model_index.json"] if parts else list(FLAT_MODEL_FILES)
    try:
        return Path(snapshot_download(model, allow_patterns=patterns, local_files_only=True))
    except HFValidationError:
        raise UserError(f"'{model}' is neither a folder nor a Hugging Face model id") from None
    except Exception:  # not in the cache
        pass
    if not _hub_reachable():
        raise UserError(missing_weights_message(model, kind, flag))
    try:
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as e:
        raise UserError(f"could not download '{model}': {str(e).splitlines()[0] if str(e) else type(e).__name__}")


HALF_VARIANT = re.compile(r"\.fp16[.-]")  # model.fp16.safetensors, diffusion_pytorch_model.fp16-00001-of-00002...


def weight_format(part: Path, dtype) -> dict:
    """`from_pretrained` keywords (variant, use_safetensors) for the weight files a model part's folder holds:
    safetensors before .bin; the fp16 variant first when running in half precision (half the bytes to read),
    else the full-precision files, else whatever there is (fp16 weights upcast to fp32 lose nothing more)."""
    import torch

    names = [p.name for p in part.iterdir()] if part.is_dir() else []
    found = {(ext, bool(HALF_VARIANT.search(n))) for n in names for ext in ("safetensors", "bin")
             if n.endswith("." + ext) or re.search(rf"\.{ext}\.index\.json$", n)}
    half_first = dtype in (torch.float16, torch.bfloat16)
    for ext in ("safetensors", "bin"):
        for half in ((True, False) if half_first else (False, True)):
            if (ext, half) in found:
                return {"variant": "fp16" if half else None, "use_safetensors": ext == "safetensors"}
    raise UserError(f"{part} holds no weights (*.safetensors or *.bin); download that part of the model again")
