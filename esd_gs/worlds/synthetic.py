"""The offline world: the procedural head's photo set as an exact prior (esd_gs/synthetic/)."""

from __future__ import annotations

from pathlib import Path

from ..config import stage2_step
from ..core.objective import Objective, PhotometricObjective
from ..guidance.distill import DistillationObjective
from ..guidance.variational import UNetVariational
from ..io.atomic import write_json
from ..synthetic.janus import SUMMARY_KEYS, janus_report
from ..synthetic.prior import SyntheticPrior
from ..synthetic.variational import ExactVariational, small_unet
from .base import PriorWorld


class SyntheticWorld(PriorWorld):
    """Photos and renders are on white; the training cameras are the photos' orbit; a run ends with its
    Janus report (janus.json)."""

    def objective(self) -> Objective:
        cfg, syn = self.cfg, self.cfg.synthetic
        prior = SyntheticPrior(syn)
        if cfg.guidance == "photometric":
            return PhotometricObjective(prior.photo_cameras(), prior.photos, "white", cfg.render.batch_size)
        variational = None
        if cfg.guidance != "sds":
            variational = ExactVariational(syn, prior.scheduler) if syn.variational == "exact" else \
                self.learned_variational(prior)
        return DistillationObjective(prior, variational, cfg.guidance, cfg.lam, cfg.prior, syn.camera_config(),
                                     cfg.render.resolution, cfg.render.batch_size, cfg.steps, stage2_step(cfg), "white",
                                     cfg.lam_final)

    def learned_variational(self, prior: SyntheticPrior) -> UNetVariational:
        """The small UNet trained fully (no pretrained base, so no LoRA), with no text (one prompt)."""
        import torch
        from diffusers import DDPMScheduler

        unet = small_unet(self.cfg.synthetic).to(self.device)
        text = torch.zeros(1, 1, unet.config.cross_attention_dim, device=self.device)
        vcfg = type(self.cfg.variational)(**{**vars(self.cfg.variational), "lora_rank": 0})
        scheduler = DDPMScheduler.from_config(prior.scheduler.config,
                                              prediction_type=self.cfg.synthetic.unet_prediction)
        return UNetVariational(unet, text, scheduler, vcfg)

    def orbit(self) -> tuple[float, float]:
        return self.cfg.synthetic.radius, self.cfg.synthetic.fovy_deg

    def evaluate(self, splats, run_dir: Path) -> dict:
        return evaluate_janus(splats, run_dir, self.cfg.synthetic)


def evaluate_janus(splats, run_dir: Path, cfg) -> dict:
    """janus.json in the run folder, its summary returned: for every world whose truth is the head."""
    report = janus_report(splats, cfg)
    write_json(run_dir / "janus.json", report)
    return {"janus": {k: report[k] for k in SUMMARY_KEYS}}
