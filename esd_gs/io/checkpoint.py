"""Checkpoints: one torch file per save, written atomically, loaded with weights_only=True.

A checkpoint holds only tensors, numbers, strings, lists and dicts (no pickled objects), so a file
from elsewhere cannot run code. Because every save is a rename, a half-written file never exists
under a checkpoint name; `latest_checkpoint` still falls back to an older one if the newest fails.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from ..errors import UserError
from .atomic import atomic_path

PATTERN = "step_*.pt"
NAME = re.compile(r"^step_\d+\.pt$")  # what we write: a stray step_backup.pt is not ours
KEYS = ("step", "splats", "optimizers", "strategy", "objective", "rng")


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    path = Path(directory) / f"step_{step:07d}.pt"
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer reports a full disk as RuntimeError("... file write failed")
            raise UserError(f"cannot write {path}: {str(e).strip().splitlines()[-1][:200]} (is the disk full?); "
                            "the previous checkpoint is kept") from None
    for old in checkpoint_paths(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path}: {type(e).__name__}")
    missing = [k for k in KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}")
    problem = damage(state)
    if problem:
        raise UserError(f"checkpoint {path} is damaged ({problem})")
    return state


SPLAT_SHAPES = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (), "sh0": (1, 3)}


def damage(state: dict) -> str | None:
    """What is wrong with a checkpoint whose keys are all there (a step that is no count, splats that are no
    splats, random states that are no random states), or None."""
    step, splats, rng = state["step"], state["splats"], state["rng"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"its step is {step!r}"
    if not isinstance(splats, dict) or not all(torch.is_tensor(splats.get(k)) for k in (*SPLAT_SHAPES, "shN")):
        return "its splats are not the six tensors of a splat set"
    n = len(splats["means"]) if splats["means"].dim() else -1
    for key, shape in SPLAT_SHAPES.items():
        if tuple(splats[key].shape) != (n, *shape):
            return f"splats.{key} has shape {tuple(splats[key].shape)}"
    if splats["shN"].dim() != 3 or splats["shN"].shape[0] != n or splats["shN"].shape[2] != 3:
        return f"splats.shN has shape {tuple(splats['shN'].shape)}"
    if not isinstance(rng, dict) or not all(torch.is_tensor(rng.get(k)) and rng[k].dtype == torch.uint8
                                            for k in ("torch", "cameras")):
        return "its random states are not byte tensors"
    if not isinstance(state["optimizers"], dict) or not isinstance(state["strategy"], dict):
        return "its optimizer or densification state is not a mapping"
    return None


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoint files, oldest step first."""
    return sorted(p for p in Path(directory).glob(PATTERN) if NAME.match(p.name))


def step_of(path: Path) -> int:
    return int(Path(path).stem.split("_")[1])


def latest_checkpoint(directory: Path) -> dict | None:
    """The newest checkpoint that loads (warning about any newer one that does not), or None."""
    paths = checkpoint_paths(directory)
    for i, path in enumerate(reversed(paths)):
        try:
            return load_checkpoint(path)
        except UserError as e:
            warnings.warn(f"{e}; " + ("using an older checkpoint" if i + 1 < len(paths) else "no older one is left"))
    return None
