"""The real world: Stable Diffusion weights as the prior, a LoRA + camera embedding as the variational score."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import stage2_step
from ..core.device import pick_dtype
from ..guidance.distill import DistillationObjective
from ..guidance.stable_diffusion import DEFAULT_MODEL, StableDiffusionPrior, load_scheduler
from ..guidance.variational import UNetVariational
from ..guidance.weights import resolve_model, shipped_or_given, weight_format
from .base import PriorWorld

SYNTHETIC_HEAD = "synthetic-head"  # training.json's "truth" in folders built by tools/train_tiny_sd.py


def knows_synthetic_head(model: str) -> bool:
    """Whether a model folder was trained on the synthetic head's photos (then the head is the truth a run
    is measured against). Hub ids never are."""
    info = Path(shipped_or_given(model)).expanduser() / "training.json"
    try:
        return json.loads(info.read_text()).get("truth") == SYNTHETIC_HEAD
    except (OSError, ValueError, AttributeError):
        return False


class StableDiffusionWorld(PriorWorld):
    def __init__(self, cfg, device: torch.device, prior: StableDiffusionPrior | None = None):
        """prior: a ready-made one (benchmarks use random full-size weights); default: loaded from cfg."""
        super().__init__(cfg, device)
        self.prior = prior

    def objective(self) -> DistillationObjective:
        cfg = self.cfg
        prior = self.prior or StableDiffusionPrior.load(cfg.model_path or DEFAULT_MODEL, cfg.prompt,
                                                        cfg.negative_prompt, self.device,
                                                        pick_dtype(cfg.dtype, self.device))
        variational = None if cfg.guidance == "sds" else self.variational(prior)
        return DistillationObjective(prior, variational, cfg.guidance, cfg.lam, cfg.prior, cfg.cameras,
                                     cfg.render.resolution, cfg.render.batch_size, cfg.steps, stage2_step(cfg),
                                     cfg.render.background,
                                     cfg.lam_final, fused=not cfg.eager)

    def variational(self, prior: StableDiffusionPrior) -> UNetVariational:
        """LoRA on the prior's own UNet (shared), or on a separately loaded base model with its own
        scheduler (threestudio loads SD 2.1, a v-prediction model, for its LoRA)."""
        vcfg = self.cfg.variational
        if vcfg.base_model == "shared":
            return UNetVariational(prior.unet, prior.cond[None], prior.scheduler, vcfg)
        from diffusers import UNet2DConditionModel

        folder = resolve_model(vcfg.base_model, ("unet", "scheduler"), dtype=prior.dtype)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=prior.dtype,
                                                    **weight_format(folder / "unet", prior.dtype))
        unet = unet.to(self.device).requires_grad_(False)
        return UNetVariational(unet, prior.cond[None], load_scheduler(str(folder)), vcfg)

    def orbit(self) -> tuple[float, float]:
        cams = self.cfg.cameras
        return sum(cams.radius) / 2, sum(cams.fovy_deg) / 2

    def evaluate(self, splats, run_dir: Path) -> dict:
        """A model that knows the synthetic head (tiny-sd) is measured as the synthetic world is: janus.json."""
        if not knows_synthetic_head(self.cfg.model_path or DEFAULT_MODEL):
            return {}
        from .synthetic import evaluate_janus

        return evaluate_janus(splats, run_dir, self.cfg.synthetic)
