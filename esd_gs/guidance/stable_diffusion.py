"""Stable Diffusion (diffusers) as a frozen score prior (its weights are found by `weights.resolve_model`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError
from .perp_neg import CONDITIONS, one_hot
from .prior import eps_from_prediction, to_model_images
from .variational import unet_forward
from .weights import WEIGHT_PARTS, resolve_model, weight_format

DEFAULT_MODEL = "sd21-base"  # an alias: the ids weights.MODEL_ALIASES lists for SD 2.1-base
VIEW_SUFFIX = {"front": ", front view", "side": ", side view", "back": ", back view",
               "overhead": ", overhead view"}
MODEL_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
"""Stable Diffusion's noise schedule (1.x and 2.x alike); the scheduler configs of its folders say the same."""


def sd_scheduler(prediction_type: str = "epsilon"):
    """Stable Diffusion's DDPM scheduler (SD_SCHEDULE, epsilon prediction unless told otherwise)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type)


def load_scheduler(model: str):
    """The DDPM scheduler of a model folder or hub id (its prediction type: epsilon or v)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(resolve_model(model, ("scheduler",)), subfolder="scheduler")


class StableDiffusionPrior:
    """Stable Diffusion 2.1-base (or any SD-layout folder / hub id) as a frozen score prior."""

    def __init__(self, vae, unet, scheduler, uncond: Tensor, cond: dict[str | None, Tensor], device="cpu",
                 dtype: torch.dtype = torch.float32):
        """From loaded modules and text embeddings [1,L,D]: `uncond`, and `cond` keyed by view direction
        (None = the plain prompt). `load` is the usual way in."""
        for module in (vae, unet):
            module.to(device).eval().requires_grad_(False)
            if module.dtype != dtype:
                raise ValueError(f"{type(module).__name__} is {module.dtype}, the prior was asked for {dtype}")
        self.vae, self.unet, self.scheduler = vae, unet, scheduler
        self.device, self.dtype = torch.device(device), dtype
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution = unet.config.sample_size * self.vae_scale
        self.uncond = uncond.to(device, dtype)
        self.cond = {k: v.to(device, dtype) for k, v in cond.items()}

    @classmethod
    def load(cls, model: str, prompt: str, negative_prompt: str = "", device="cpu",
             dtype: torch.dtype = torch.float32) -> "StableDiffusionPrior":
        """Loads a hub id or a local diffusers folder and embeds the prompt (+ view suffixes)."""
        folder = resolve_model(model, MODEL_PARTS, dtype=dtype)  # missing weights: said before the slow imports
        formats = {part: weight_format(folder / part, dtype) for part in WEIGHT_PARTS}  # before loading any
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        try:
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype,
                                                         **formats["text_encoder"])
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **formats["vae"])
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **formats["unet"])
            scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load Stable Diffusion from {model}: {str(e).splitlines()[0]}") from None
        text_encoder.to(device).eval().requires_grad_(False)

        @torch.no_grad()
        def embed(text: str) -> Tensor:
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            return text_encoder(ids)[0]

        cond = {None: embed(prompt), **{d: embed(prompt + s) for d, s in VIEW_SUFFIX.items()}}
        return cls(vae, unet, scheduler, embed(negative_prompt), cond, device, dtype)

    def encode(self, rgb: Tensor) -> Tensor:
        """Deterministic VAE encoding (the posterior mean), returned in float32 whatever the weights' dtype."""
        x = to_model_images(rgb, self.resolution).to(self.dtype)
        return self.vae.encode(x).latent_dist.mean.float() * self.vae.config.scaling_factor

    def embeddings(self, conds: Tensor) -> Tensor:
        """Text embeddings [R,L,D] for conditioning weights [R, len(CONDITIONS)] (a one-hot row selects one
        prompt exactly; Perp-Neg mixes view prompts)."""
        table = torch.stack([self.uncond[0], *(self.cond[c][0] for c in CONDITIONS[1:])])
        return torch.einsum("rk,kld->rld", conds.to(table), table)

    def text_rows(self, names: list) -> Tensor:
        """Text embeddings [R,L,D] of rows named as in CONDITIONS: the embeddings already on the device, stacked
        (nothing is uploaded, unlike a weights tensor for `embeddings`)."""
        return torch.cat([self.uncond if name == "uncond" else self.cond[name] for name in names])

    @torch.no_grad()
    def eps_for(self, x_t: Tensor, t: Tensor, conds: Tensor) -> Tensor:
        """The plain prior's noise prediction (float32) for each row's conditioning, in one UNet call."""
        if self.unet.class_embedding is None:
            pred = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=self.embeddings(conds)).sample
        else:  # a variational net attached its camera embedding (and LoRA): these rows are the plain prior's
            labels = self.unet.class_embedding.labels(None, len(x_t), prior_rows=True)
            pred = unet_forward(self.unet, x_t.to(self.dtype), t, self.embeddings(conds), labels)
        return eps_from_prediction(pred, x_t, t, self.scheduler)

    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        B = len(x_t)
        conds = one_hot(["uncond"] * B + (directions or [None] * B))
        eps_uncond, eps_cond = self.eps_for(torch.cat([x_t, x_t]), torch.cat([t, t]), conds).chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)
