"""The training loop: render views, score them with the objective, step Adam, densify, save.

Everything random draws from the global torch RNG or `self.generator` (cameras, backgrounds); both are
in every checkpoint, so 10 steps + --resume 10 steps equals 20 steps straight on CPU.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from .cameras import VIEW_ELEVATION_DEG, Cameras, make_cameras
from .config import TrainConfig, config_changes, resumable, saved_config, to_dict, validate
from .device import pick_device, upload
from .errors import Interrupted, UserError
from .gaussians import init_sphere, learning_rates, make_optimizers, splats_from_tensors
from .io.atomic import check_output_dir, clean_stale_temps, write_text
from .io.lock import LOCK_NAME, RunLock, claim_new_run_dir
from .io.checkpoint import checkpoint_paths, latest_checkpoint, save_checkpoint, step_of
from .io.media import grid, save_png, save_video
from .io.ply import read_ply, write_ply
from .render import render, render_frames
from .render.turntable import render_turntable
from .worlds import World, make_world

MAX_NONFINITE_STREAK = 5
SPLATS_PLY_UP = "-y"  # INRIA/COLMAP's frame: upright in SuperSplat, which the README names (esd-gs reads it back)
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
    allowed changes (recorded in resumes.jsonl)."""
    saved = saved_config(run_dir)
    if cfg.prior.anneal_step is None:  # the run's schedule was fixed when it started
        cfg.prior.anneal_step = (saved.get("prior") or {}).get("anneal_step")
    changes = config_changes(saved, cfg)
    refused = {k: v for k, v in changes.items() if not resumable(k)}
    if refused:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise UserError(f"--resume would change how {run_dir.name} is trained ({listed}{more}); only steps, "
                        "log.* and file locations may change: drop those flags, or start a new run")
    return changes


def write_metrics(pending: list[dict], metrics, bar, since: float) -> float:
    """Appends the logs of the steps since the last call to metrics.jsonl: their device scalars are read in
    one transfer (one wait for the device) and it_s is their mean rate. Returns the time of this call."""
    now = time.perf_counter()
    if not pending:
        return now
    tensors = [(i, k, v) for i, logs in enumerate(pending) for k, v in logs.items() if torch.is_tensor(v)]
    if tensors:
        device = next((v.device for _, _, v in tensors if v.device.type != "cpu"), torch.device("cpu"))
        values = torch.stack([v.detach().float().reshape(()).to(device) for _, _, v in tensors]).tolist()
        for (i, k, _), value in zip(tensors, values):
            pending[i][k] = value
    rate = len(pending) / max(now - since, 1e-9)
    try:  # an unbuffered file: a failed write fails here, and leaves nothing for close() to fail on again
        metrics.write("".join(json.dumps({**logs, "it_s": rate}) + "\n" for logs in pending).encode())
    except OSError as e:  # a full disk: say which file (ENOSPC names none); the checkpoints are intact
        raise UserError(f"cannot write {metrics.name}: {e.strerror or e}") from None
    bar.set_postfix(loss=f"{pending[-1]['loss']:.4g}", gaussians=pending[-1]["n_gaussians"], refresh=False)
    return now


class Trainer:
    def __init__(self, cfg: TrainConfig, world: World | None = None):
        """world: a ready-made one (benchmarks); default: the configured world."""
        cfg = copy.deepcopy(cfg)
        validate(cfg)
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.run_dir, self._lock, created = claim_run_dir(cfg)
        try:
            self._setup(cfg, world)
        except BaseException:
            self._lock.release()
            remove_if_empty(created)
            raise

    def _setup(self, cfg: TrainConfig, world: World | None) -> None:
        resume_changes = check_resume(cfg, self.run_dir) if cfg.resume else {}
        if cfg.prior.anneal_step is None:
            cfg.prior.anneal_step = round(0.2 * cfg.steps)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # every input (PLY, weights) is read before anything is written
        if cfg.init_ply:
            self.splats = splats_from_tensors(read_ply(cfg.init_ply), self.device)
        else:
            self.splats = init_sphere(cfg.gaussians, self.generator, self.device)
        self.world = world or make_world(cfg, self.device)
        self.objective = self.world.objective()
        self.timer = self.objective.timer
        if cfg.overwrite and not cfg.resume:
            clear_run_outputs(self.run_dir)
        try:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run folder {self.run_dir}: {e.strerror}")
        for folder in (self.run_dir, self.run_dir / "checkpoints", self.run_dir / "previews"):
            clean_stale_temps(folder)
        self.optimizers = make_optimizers(self.splats, cfg.gaussians)
        self.densifier = cfg.densify if cfg.densify.enabled else None
        self.strategy_state = self.densifier.initialize_state(cfg.gaussians.scene_scale) if self.densifier else {}
        self.step = 0
        self.skipped_steps = 0
        self.nonfinite_streak = 0
        self.lr_scale = 1.0  # halved by each rollback after non-finite steps
        if cfg.resume:
            self._load(latest_checkpoint(self.run_dir / "checkpoints"))
            if resume_changes:
                record = {"step": self.step, "changes": {k: list(v) for k, v in resume_changes.items()}}
                path = self.run_dir / "resumes.jsonl"
                before = path.read_text(errors="replace") if path.is_file() else ""
                write_text(path, before + json.dumps(record, default=str) + "\n")  # atomic, names the file on ENOSPC
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self._last_checkpoint_time = time.monotonic()

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step,
            "splats": {k: v.detach().cpu() for k, v in self.splats.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "strategy": {k: v for k, v in self.strategy_state.items()},
            "objective": self.objective.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cameras": self.generator.get_state()},
            "skipped_steps": self.skipped_steps,
            "lr_scale": self.lr_scale,
        }

    def _load(self, ckpt: dict | None) -> None:
        if ckpt is None:
            raise UserError(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}")
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:  # its parts do not fit this run
            raise UserError(f"the checkpoint of step {ckpt['step']} in {self.run_dir / 'checkpoints'} does not fit "
                            f"this run ({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e) else ''})"
                            ) from None

    def _restore(self, ckpt: dict) -> None:
        self.splats = splats_from_tensors(ckpt["splats"], self.device)
        self.optimizers = make_optimizers(self.splats, self.cfg.gaussians)
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
            for moment in opt.state[self.splats[k]].values():  # torch checks none of them against the parameter
                if moment.dim() and moment.shape != self.splats[k].shape:
                    raise ValueError(f"Adam's state of {k} has shape {tuple(moment.shape)}")
        self.strategy_state = {k: (v.to(self.device) if torch.is_tensor(v) else v)
                               for k, v in ckpt["strategy"].items()}
        self.objective.load_state_dict(ckpt["objective"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["cameras"])
        self.step = ckpt["step"]
        self.skipped_steps = ckpt.get("skipped_steps", 0)
        self.lr_scale = ckpt.get("lr_scale", 1.0)

    def save_checkpoint(self) -> None:
        save_checkpoint(self.run_dir / "checkpoints", self.step, self.state(), keep=self.cfg.log.keep_checkpoints)
        self._last_checkpoint_time = time.monotonic()

    def checkpoint_due(self) -> bool:
        log = self.cfg.log
        if self.step >= self.cfg.steps:
            return False  # finish() saves the last one
        by_step = log.checkpoint_every and self.step % log.checkpoint_every == 0
        by_time = log.checkpoint_minutes and time.monotonic() - self._last_checkpoint_time > 60 * log.checkpoint_minutes
        return bool(by_step or by_time)

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        step, timer = self.step, self.timer
        views = self.objective.views(step, self.generator)
        with timer("render"):
            out = render(self.splats, views.cameras, upload(views.backgrounds, self.device),
                         backend=self.cfg.render.backend)
        step_loss = self.objective.loss(out.rgb, views, step)
        if self.densifier:
            self.densifier.step_pre_backward(self.splats, self.optimizers, self.strategy_state, step, out.info)
        with timer("backward"):
            step_loss.loss.backward()
        logs = {"step": step + 1, "loss": step_loss.loss.detach(), **step_loss.logs}
        if self._finite(step_loss.loss):
            with timer("optimizer"):
                lrs = learning_rates(self.cfg.gaussians, step)
                for k, opt in self.optimizers.items():
                    opt.param_groups[0]["lr"] = lrs[k] * self.lr_scale
                    opt.step()
            if self.densifier:
                with timer("densify"):
                    self.densifier.step_post_backward(self.splats, self.optimizers, self.strategy_state, step,
                                                      out.info)
                logs |= self.strategy_state.pop("refine_log", {})
            logs |= self.objective.update(self.splats, step_loss, views)
            self.nonfinite_streak = 0
        else:
            self._handle_nonfinite()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.step += 1
        return {**logs, "n_gaussians": len(self.splats["means"]), "skipped_steps": self.skipped_steps}

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite: one reduction, one wait for the device (of the
        step's only one when logs are read every log.metrics_every steps)."""
        grads = [p.grad for p in self.splats.values() if p.grad is not None and p.grad.numel()]
        largest = torch.stack([loss.detach().abs().float(), *torch._foreach_norm(grads, float("inf"))])
        return bool(torch.isfinite(largest).all())

    def _handle_nonfinite(self) -> None:
        """Skip the step; after a streak, roll back to the last checkpoint and halve the learning rates."""
        self.skipped_steps += 1
        self.nonfinite_streak += 1
        if self.nonfinite_streak < MAX_NONFINITE_STREAK:
            return
        ckpt = latest_checkpoint(self.run_dir / "checkpoints")
        if ckpt is None:
            raise RuntimeError("training diverged (non-finite loss or gradients) before the first checkpoint")
        step, skipped, scale = self.step, self.skipped_steps, self.lr_scale
        self._load(ckpt)
        self.step, self.skipped_steps, self.nonfinite_streak, self.lr_scale = step, skipped, 0, scale * 0.5
        warnings.warn(f"step {step}: {MAX_NONFINITE_STREAK} non-finite steps in a row; rolled back to the "
                      f"checkpoint of step {ckpt['step']} and halved the learning rates")

    # -- outputs -----------------------------------------------------------------------------
    def preview_cameras(self, resolution: int) -> Cameras:
        """Front, left, back, right."""
        radius, fovy = self.world.orbit()
        return make_cameras(torch.tensor([0.0, 90.0, 180.0, -90.0]), VIEW_ELEVATION_DEG, radius, fovy, resolution)

    def save_preview(self) -> None:
        res = self.cfg.render.resolution
        views, _, _ = render_frames(self.splats, self.preview_cameras(res), backend=self.cfg.render.backend,
                                    depth=False)
        save_png(self.run_dir / "previews" / f"step_{self.step:06d}.png", grid(views, upscale=max(1, 128 // res)))

    def finish(self) -> dict:
        """The final checkpoint, preview, turntable and the world's report, then splats.ply: written last,
        it marks the run finished (esd-gs batch reuses runs that have one), so a run killed in here is
        finished again by --resume."""
        self.save_checkpoint()
        self.save_preview()
        log = self.cfg.log
        if log.turntable_frames:
            radius, fovy = self.world.orbit()
            frames, _, _ = render_turntable(self.splats, log.turntable_frames, log.turntable_resolution,
                                            radius=radius, fovy_deg=fovy, backend=self.cfg.render.backend, depth=False)
            save_video(self.run_dir / "turntable.gif", frames)
            save_video(self.run_dir / "turntable.mp4", frames)
        report = self.world.evaluate(self.splats, self.run_dir)
        write_ply(self.run_dir / "splats.ply", self.splats, up=SPLATS_PLY_UP)
        return {"run_dir": str(self.run_dir), "steps": self.step, "skipped_steps": self.skipped_steps,
                "n_gaussians": len(self.splats["means"]), **report}

    def _trim_metrics(self) -> Path:
        """Keeps the metric lines of steps already in the checkpoint (a killed run may have written more)."""
        path = self.run_dir / "metrics.jsonl"
        kept = []
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():  # damaged bytes end the kept lines
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    break
        write_text(path, "".join(line + "\n" for line in kept))
        return path

    def train(self) -> dict:
        """Runs to cfg.steps and writes the outputs (see _train); the run folder stays locked until then."""
        try:
            return self._train()
        finally:
            self.close()

    def close(self) -> None:
        """Unlocks the run folder: for code that drives train_step itself (train() does it when it ends)."""
        self._lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _train(self) -> dict:
        """Runs to cfg.steps and writes the outputs. Ctrl-C or SIGTERM (a cluster's scheduler, `kill`) stops at
        the end of the current step with a checkpoint (raises Interrupted); a second one stops at once,
        keeping the newest checkpoint."""
        cfg = self.cfg
        metrics_path = self._trim_metrics()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.log.progress, desc=self.run_dir.name,
                   unit="step", dynamic_ncols=True)
        stop = threading.Event()
        received = [signal.SIGINT]
        previous = {}
        if threading.current_thread() is threading.main_thread():
            def request_stop(signum, frame):
                if stop.is_set():
                    raise KeyboardInterrupt
                received[0] = signum
                stop.set()
            previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        viewer = None
        try:
            viewer = self.start_viewer() if cfg.viewer else None
            with open(metrics_path, "ab", buffering=0) as metrics:
                pending, since = [], time.perf_counter()
                while self.step < cfg.steps and not stop.is_set():
                    if viewer:
                        viewer.wait_while_paused(stop)
                        if stop.is_set():
                            break
                    pending.append(self.train_step())
                    bar.update(1)
                    if viewer and (self.step % cfg.viewer_every == 0 or self.step >= cfg.steps):
                        viewer.update(self.splats, f"step {self.step} of {cfg.steps} · loss "
                                      f"{float(pending[-1]['loss']):.4g} · {len(self.splats['means']):,} Gaussians")
                    preview = cfg.log.preview_every and self.step % cfg.log.preview_every == 0
                    checkpoint = self.checkpoint_due()
                    if len(pending) >= cfg.log.metrics_every or preview or checkpoint or self.step >= cfg.steps:
                        since = write_metrics(pending, metrics, bar, since)
                        pending = []
                    if preview:
                        self.save_preview()
                    if checkpoint:
                        self.save_checkpoint()
                write_metrics(pending, metrics, bar, since)
            if stop.is_set() and self.step < cfg.steps:
                self.save_checkpoint()
                raise Interrupted(f"stopped at step {self.step} of {cfg.steps} ({signal.Signals(received[0]).name}); "
                                  f"saved a checkpoint in {self.run_dir / 'checkpoints'}: continue with --resume",
                                  received[0])
        except KeyboardInterrupt:
            paths = checkpoint_paths(self.run_dir / "checkpoints")
            kept = f"the checkpoint of step {step_of(paths[-1])} is kept: continue with --resume" \
                if paths else "no checkpoint was written yet"
            raise Interrupted(f"interrupted at step {self.step} of {cfg.steps}; {kept}", received[0]) from None
        finally:
            bar.close()
            if viewer:
                viewer.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.finish()

    def start_viewer(self):
        """The live viewer of --viewer (viser, in a process of its own), framed on the current splats; its
        address is printed."""
        from .viewer import LiveViewer

        # 256 px (the browser's slider goes higher): the renders share the machine with training
        viewer = LiveViewer(self.splats, port=self.cfg.viewer_port, max_resolution=256,
                            backend=self.cfg.render.backend)
        tqdm.write(f"viewer on http://localhost:{viewer.port} (training pauses from its button)")
        return viewer
