"""`esd-gs download`: Stable Diffusion's files fetched on a connected machine, for offline ones (--model-path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from ..errors import UserError
from .args import parse


@dataclass
class DownloadArgs:
    """Fetch the Stable Diffusion files esd-gs uses (configs, tokenizer, one set of UNet / VAE / text encoder
    weights; not the single-file checkpoints) into a folder to pass as --model-path on a machine without the
    hub. Aliases try their ids in order: sd21-base (the default prior), sd21 (768 px, v prediction)."""

    model: tyro.conf.Positional[str] = "sd21-base"
    """Alias or hub id."""
    dir: Path = Path("models/sd21-base")
    """Where the pipeline folder goes."""
    full_precision: bool = False
    """fp32 weights (twice the size) instead of the fp16 ones; training in bf16/fp16 (GPUs) needs no more."""


def cmd_download(argv: list[str]) -> None:
    from ..guidance.stable_diffusion import MODEL_PARTS
    from ..guidance.weights import download, hub_reachable

    args = parse(DownloadArgs, argv, "esd-gs download")
    if not hub_reachable():
        raise UserError("the Hugging Face hub cannot be reached from here (offline, or HF_HUB_OFFLINE is set); run "
                        "esd-gs download on a connected machine and copy the folder over")
    folder = download(args.model, MODEL_PARTS, half=not args.full_precision, local_dir=args.dir)
    print(f"done: {folder} (esd-gs train --model-path {folder} ...)")
