"""The training loop: render views, score them with the objective, step Adam, densify; its run folder,
checkpoints and outputs are the other modules of run/.

One step reads, in order (core/objective.py): views, render, the objective's loss, backward, a finite check,
Adam, densification, the objective's own update (the variational score).
"""

from __future__ import annotations

import copy
import signal
import weakref

import torch
import yaml
from tqdm import tqdm

from ..config import TrainConfig, stage2_step, to_dict, validate
from ..core.device import pick_device, upload
from ..core.gaussians import init_sphere, learning_rates, make_optimizers, splats_from_tensors
from ..errors import Interrupted, UserError
from ..io.atomic import clean_stale_temps, write_text
from ..io.checkpoint import checkpoint_paths, latest_checkpoint, step_of
from ..io.ply import read_ply
from ..render import render
from ..worlds import PriorWorld, make_world
from . import outputs
from .checkpoints import Checkpointer, capture, restore, skip_nonfinite_step
from .metrics_log import MetricsLog
from .run_folder import check_resume, claim_run_dir, clear_run_outputs, record_resume, remove_if_empty
from .stop import stop_requests


class Trainer:
    def __init__(self, cfg: TrainConfig, world: PriorWorld | None = None):
        """world: a ready-made one (benchmarks); default: the configured world. The run folder is locked from
        here until train() ends or close() (`with Trainer(cfg) as t:` for code that drives train_step)."""
        cfg = copy.deepcopy(cfg)
        validate(cfg)
        self.cfg, self.device = cfg, pick_device(cfg.device)
        self.run_dir, self._lock, created = claim_run_dir(cfg)
        weakref.finalize(self, self._lock.release)  # a trainer dropped unclosed still unlocks (and closes) its folder
        try:
            self._setup(cfg, world)
        except BaseException:
            self._lock.release()
            remove_if_empty(created)
            raise

    def _setup(self, cfg: TrainConfig, world: PriorWorld | None) -> None:
        resume_changes = check_resume(cfg, self.run_dir) if cfg.resume else {}
        cfg.stage2_step = stage2_step(cfg)  # fixed when the run starts
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # every input (PLY, weights) is read before anything is written
        self.splats = splats_from_tensors(read_ply(cfg.init_ply), self.device) if cfg.init_ply else \
            init_sphere(cfg.gaussians, self.generator, self.device)
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
        self.step = self.skipped_steps = self.nonfinite_streak = 0
        self.lr_scale = 1.0  # halved by each rollback after non-finite steps
        if cfg.resume:
            restore(self, latest_checkpoint(self.run_dir / "checkpoints"))
            if resume_changes:
                record_resume(self.run_dir, self.step, resume_changes)
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", cfg.log, cfg.steps)

    def state(self) -> dict:
        return capture(self)

    def save_checkpoint(self) -> None:
        self.checkpointer.save(self.state())

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
        if all_finite(step_loss.loss, self.splats):
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
            skip_nonfinite_step(self)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.step += 1
        return {**logs, "n_gaussians": len(self.splats["means"]), "skipped_steps": self.skipped_steps}

    def finish(self) -> dict:
        return outputs.finish(self)

    def train(self) -> dict:
        """Runs to cfg.steps and writes the outputs (train_loop); the run folder stays locked until then."""
        try:
            return train_loop(self)
        finally:
            self.close()

    def close(self) -> None:
        """Unlocks the run folder: for code that drives train_step itself (train() does it when it ends)."""
        self._lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def all_finite(loss: torch.Tensor, splats) -> bool:
    """Whether the loss and every gradient are finite: one reduction, one wait for the device (of the step's
    only one when logs are read every log.metrics_every steps)."""
    grads = [p.grad for p in splats.values() if p.grad is not None and p.grad.numel()]
    largest = torch.stack([loss.detach().abs().float(), *torch._foreach_norm(grads, float("inf"))])
    return bool(torch.isfinite(largest).all())


def train_loop(trainer: Trainer) -> dict:
    """Runs the trainer to cfg.steps and writes the outputs. Ctrl-C or SIGTERM stops at the end of the current
    step with a checkpoint (raises Interrupted); a second one stops at once, keeping the newest checkpoint."""
    cfg, log = trainer.cfg, trainer.cfg.log
    bar = tqdm(total=cfg.steps, initial=trainer.step, disable=not log.progress, desc=trainer.run_dir.name, unit="step",
               dynamic_ncols=True)
    metrics, viewer = MetricsLog(trainer.run_dir / "metrics.jsonl", trainer.step), None
    with stop_requests() as stop:
        try:
            viewer = outputs.start_viewer(trainer) if cfg.viewer else None
            while trainer.step < cfg.steps and not stop.is_set():
                if viewer:
                    viewer.wait_while_paused(stop)
                    if stop.is_set():
                        break
                metrics.add(logs := trainer.train_step())
                bar.update(1)
                if viewer:
                    outputs.show_step(viewer, trainer, logs["loss"])
                preview = log.preview_every and trainer.step % log.preview_every == 0
                checkpoint = trainer.checkpointer.due(trainer.step)
                if len(metrics.pending) >= log.metrics_every or preview or checkpoint or trainer.step >= cfg.steps:
                    metrics.flush(bar)
                if preview:
                    outputs.save_preview(trainer)
                if checkpoint:
                    trainer.save_checkpoint()
            metrics.flush(bar)
            if stop.is_set() and trainer.step < cfg.steps:
                trainer.save_checkpoint()
                raise Interrupted(f"stopped at step {trainer.step} of {cfg.steps} ({signal.Signals(stop.signum).name}); "
                                  f"saved a checkpoint in {trainer.run_dir / 'checkpoints'}: continue with --resume",
                                  stop.signum)
        except KeyboardInterrupt:
            paths = checkpoint_paths(trainer.run_dir / "checkpoints")
            kept = f"the checkpoint of step {step_of(paths[-1])} is kept: continue with --resume" \
                if paths else "no checkpoint was written yet"
            raise Interrupted(f"interrupted at step {trainer.step} of {cfg.steps}; {kept}", stop.signum) from None
        finally:
            bar.close()
            metrics.close()
            if viewer:
                viewer.stop()
    return trainer.finish()
