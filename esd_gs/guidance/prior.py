"""Diffusion priors behind one interface: Stable Diffusion (diffusers) or the synthetic world's exact one.

A prior turns rendered RGB into latents (`encode`), owns the DDPM noise schedule (`scheduler`) and
predicts classifier-free-guided noise for the prompt it was built with (`guided_eps`), optionally
with a view-dependent suffix per row ("front" / "side" / "back" / "overhead").
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"
VIEW_SUFFIX = {"front": ", front view", "side": ", side view", "back": ", back view",
               "overhead": ", overhead view"}


class Prior(Protocol):
    resolution: int  # image side the prior works at
    scheduler: object  # diffusers DDPMScheduler: alphas_cumprod, add_noise, get_velocity
    unet: torch.nn.Module | None  # the UNet a variational network may share (None: no UNet)

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb [B,H,W,3] in [0,1] -> latents [B,C,h,w], differentiable."""

    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        """uncond + scale * (cond - uncond), without autograd."""


def eps_from_prediction(pred: Tensor, x_t: Tensor, t: Tensor, scheduler) -> Tensor:
    """UNet output -> epsilon, for epsilon- and v-prediction models."""
    if scheduler.config.prediction_type == "epsilon":
        return pred
    if scheduler.config.prediction_type != "v_prediction":
        raise UserError(f"unsupported prediction type {scheduler.config.prediction_type!r}")
    ab = scheduler.alphas_cumprod.to(x_t.device)[t].view(-1, 1, 1, 1).to(x_t.dtype)
    return ab.sqrt() * pred + (1 - ab).sqrt() * x_t


def missing_weights_message(model: str) -> str:
    return (f"no Stable Diffusion weights for '{model}' were found locally (offline or not cached); "
            f"download them on a connected machine (huggingface-cli download {model} --local-dir DIR) and "
            "pass --model-path DIR, or copy the Hugging Face cache into $HF_HOME")


@contextlib.contextmanager
def adapters_disabled(unet):
    """Runs the shared UNet as the plain prior even when a LoRA adapter is attached to it."""
    has_adapters = getattr(unet, "_hf_peft_config_loaded", False)
    if has_adapters:
        unet.disable_adapters()
    try:
        yield
    finally:
        if has_adapters:
            unet.enable_adapters()


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
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        try:
            tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
            text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=dtype)
            vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
            unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype)
            scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
        except (OSError, ValueError) as e:
            if Path(model).is_dir():
                raise UserError(f"cannot load Stable Diffusion from folder {model}: {str(e).splitlines()[0]}") from None
            raise UserError(missing_weights_message(model)) from None
        text_encoder.to(device).eval().requires_grad_(False)

        @torch.no_grad()
        def embed(text: str) -> Tensor:
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            return text_encoder(ids)[0]

        cond = {None: embed(prompt), **{d: embed(prompt + s) for d, s in VIEW_SUFFIX.items()}}
        return cls(vae, unet, scheduler, embed(negative_prompt), cond, device, dtype)

    def encode(self, rgb: Tensor) -> Tensor:
        x = rgb.permute(0, 3, 1, 2)
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        latents = self.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist.mean
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        B = len(x_t)
        cond = torch.cat([self.cond[None if directions is None else d] for d in (directions or [None] * B)])
        text = torch.cat([self.uncond.expand(B, -1, -1), cond])
        x2, t2 = torch.cat([x_t, x_t]).to(self.dtype), torch.cat([t, t])
        extra = {}
        if self.unet.class_embedding is not None:  # a variational net attached its camera embedding
            extra["class_labels"] = self.unet.class_embedding.labels(None, 2 * B, prior_rows=True)
        with adapters_disabled(self.unet):
            pred = self.unet(x2, t2, encoder_hidden_states=text, **extra).sample
        eps_uncond, eps_cond = eps_from_prediction(pred, x2, t2, self.scheduler).float().chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)
