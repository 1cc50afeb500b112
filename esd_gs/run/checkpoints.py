"""What a checkpoint holds of a run, when one is written, and the rollback after a streak of non-finite steps.

Everything random draws from the global torch RNG or the trainer's camera generator; both are in every
checkpoint, so 10 steps + --resume 10 steps equals 20 steps straight on a CPU.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from ..config import LogConfig
from ..core.gaussians import make_optimizers, splats_from_tensors
from ..errors import UserError
from ..io.checkpoint import latest_checkpoint, save_checkpoint

MAX_NONFINITE_STREAK = 5


def capture(trainer) -> dict:
    """The trainer's state as a checkpoint holds it (tensors on the CPU, no pickled objects)."""
    return {
        "step": trainer.step,
        "splats": {k: v.detach().cpu() for k, v in trainer.splats.items()},
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
        "strategy": dict(trainer.strategy_state),
        "objective": trainer.objective.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "cameras": trainer.generator.get_state()},
        "skipped_steps": trainer.skipped_steps,
        "lr_scale": trainer.lr_scale,
    }


def restore(trainer, ckpt: dict | None) -> None:
    """Puts a checkpoint's state into the trainer; one line when there is none or it does not fit this run."""
    folder = trainer.run_dir / "checkpoints"
    if ckpt is None:
        raise UserError(f"--resume: no complete checkpoint in {folder}")
    try:
        splats = splats_from_tensors(ckpt["splats"], trainer.device)
        optimizers = make_optimizers(splats, trainer.cfg.gaussians)
        for k, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
            for moment in opt.state[splats[k]].values():  # torch checks none of them against the parameter
                if moment.dim() and moment.shape != splats[k].shape:
                    raise ValueError(f"Adam's state of {k} has shape {tuple(moment.shape)}")
        trainer.objective.load_state_dict(ckpt["objective"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        trainer.generator.set_state(ckpt["rng"]["cameras"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:  # its parts do not fit this run
        said = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise UserError(f"the checkpoint of step {ckpt['step']} in {folder} does not fit this run "
                        f"({type(e).__name__}: {said})") from None
    trainer.splats, trainer.optimizers = splats, optimizers
    trainer.strategy_state = {k: (v.to(trainer.device) if torch.is_tensor(v) else v) for k, v in ckpt["strategy"].items()}
    trainer.step = ckpt["step"]
    trainer.skipped_steps = ckpt.get("skipped_steps", 0)
    trainer.lr_scale = ckpt.get("lr_scale", 1.0)


class Checkpointer:
    """Writes checkpoints into a run's checkpoints/ every log.checkpoint_every steps or checkpoint_minutes."""

    def __init__(self, folder: Path, log: LogConfig, total_steps: int):
        self.folder, self.log, self.total_steps = folder, log, total_steps
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if step >= self.total_steps:
            return False  # the run's end saves the last one
        by_step = self.log.checkpoint_every and step % self.log.checkpoint_every == 0
        by_time = self.log.checkpoint_minutes and time.monotonic() - self.last > 60 * self.log.checkpoint_minutes
        return bool(by_step or by_time)

    def save(self, state: dict) -> None:
        save_checkpoint(self.folder, state["step"], state, keep=self.log.keep_checkpoints)
        self.last = time.monotonic()


def skip_nonfinite_step(trainer) -> None:
    """A step with a non-finite loss or gradient is skipped; after MAX_NONFINITE_STREAK in a row the run rolls
    back to its last checkpoint, keeping its step count, with its learning rates halved."""
    trainer.skipped_steps += 1
    trainer.nonfinite_streak += 1
    if trainer.nonfinite_streak < MAX_NONFINITE_STREAK:
        return
    ckpt = latest_checkpoint(trainer.run_dir / "checkpoints")
    if ckpt is None:
        raise RuntimeError("training diverged (non-finite loss or gradients) before the first checkpoint")
    step, skipped, scale = trainer.step, trainer.skipped_steps, trainer.lr_scale
    restore(trainer, ckpt)
    trainer.step, trainer.skipped_steps, trainer.nonfinite_streak, trainer.lr_scale = step, skipped, 0, scale * 0.5
    warnings.warn(f"step {step}: {MAX_NONFINITE_STREAK} non-finite steps in a row; rolled back to the checkpoint of "
                  f"step {ckpt['step']} and halved the learning rates")
