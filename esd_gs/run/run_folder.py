"""A run's folder: claimed and locked for one process, checked before a resume, cleared by --overwrite."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from ..config import TrainConfig, config_changes, flatten, rename_keys, resumable, saved_config
from ..errors import UserError
from ..io.atomic import check_output_dir, write_text
from ..io.checkpoint import checkpoint_paths, step_of
from ..io.lock import LOCK_NAME, RunLock, claim_new_run_dir

# what a run writes, and what esd-gs's commands write into a run folder (render, clip, inception): --overwrite
# clears all of it, so nothing of the old run passes for the new one's
OUTPUTS = ("config.yaml", "metrics.jsonl", "resumes.jsonl", "splats.ply", "turntable.gif", "turntable.mp4",
           "janus.json", "clip.json", "inception.json", "checkpoints", "previews",
           *(f"turntable_render{depth}.{fmt}" for depth in ("", "_depth") for fmt in ("gif", "mp4", "png")))


def default_run_name(cfg: TrainConfig) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", cfg.prompt.lower()).strip("-")[:40] or "run"
    tag = cfg.guidance if cfg.guidance != "esd" else f"esd{cfg.lam:g}" + (
        "" if cfg.lam_final in (None, cfg.lam) else f"to{cfg.lam_final:g}")
    return f"{slug}-{tag}-s{cfg.seed}"


def unfinished_step(run_dir: Path) -> int | None:
    """The newest checkpoint's step of a run that has no splats.ply yet (None: finished or never started)."""
    paths = checkpoint_paths(run_dir / "checkpoints")
    if not paths or (run_dir / "splats.ply").exists():
        return None
    return step_of(paths[-1])


def claim_run_dir(cfg: TrainConfig) -> tuple[Path, RunLock, list[Path]]:
    """The run folder, locked for this process until the run ends (another esd-gs on it is refused or moves
    on), and the folders created for it. resume: the existing folder; otherwise a new folder (suffix -1, -2,
    ..., created atomically, so two runs started together never share one) unless --overwrite."""
    base = check_output_dir(Path(cfg.output_dir) / (cfg.run_name or default_run_name(cfg)))
    if cfg.resume:
        if not checkpoint_paths(base / "checkpoints"):
            why = ("it has no checkpoint yet (the run stopped before its first one); start it again with --overwrite"
                   if (base / "config.yaml").exists() else "pass the run's --output-dir/--run-name")
            raise UserError(f"--resume: no checkpoints in {base}: {why}")
        return base, RunLock(base), []
    missing = [p for p in (base, *base.parents) if not p.exists()]
    try:
        if cfg.overwrite:
            base.mkdir(parents=True, exist_ok=True)
            return base, RunLock(base), missing
        chosen, lock = claim_new_run_dir(base)
    except OSError as e:
        raise UserError(f"cannot create the run folder {base}: {e.strerror or e}") from None
    if chosen != base:
        step = unfinished_step(base)
        what = f"an unfinished run (checkpoint at step {step})" if step is not None else "taken"
        print(f"note: {base} is {what}; this run writes to {chosen.name}"
              + (" (to continue that one, add --resume; to replace it, --overwrite)" if step is not None else ""),
              file=sys.stderr)
    return chosen, lock, [p for p in (chosen, *chosen.parents) if p in missing or p == chosen]


def remove_if_empty(folders: list[Path]) -> None:
    """A failed start leaves nothing behind: the folders it created, innermost first, if they hold only
    the lock."""
    for folder in folders:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            return


def clear_run_outputs(run_dir: Path) -> None:
    """--overwrite: removes the outputs of the run that was there (and nothing else in the folder)."""
    for name in OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def check_resume(cfg: TrainConfig, run_dir: Path) -> dict:
    """Refuses a resume whose settings differ from the run's in anything but RESUMABLE keys; returns the
    allowed changes (record_resume keeps them). The run's second stage stays where it started."""
    saved = saved_config(run_dir)
    if cfg.stage2_step is None:
        cfg.stage2_step = rename_keys(flatten(saved), str(run_dir / "config.yaml"), notice=False).get("stage2_step")
    changes = config_changes(saved, cfg)
    refused = {k: v for k, v in changes.items() if not resumable(k)}
    if refused:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise UserError(f"--resume would change how {run_dir.name} is trained ({listed}{more}); only steps, "
                        "log.* and file locations may change: drop those flags, or start a new run")
    return changes


def record_resume(run_dir: Path, step: int, changes: dict) -> None:
    """Appends what a resume changed to resumes.jsonl (atomically: a full disk names the file, loses nothing)."""
    path = run_dir / "resumes.jsonl"
    before = path.read_text(errors="replace") if path.is_file() else ""
    record = {"step": step, "changes": {k: list(v) for k, v in changes.items()}}
    write_text(path, before + json.dumps(record, default=str) + "\n")

