#!/usr/bin/env python
"""Trains a small Stable Diffusion on the synthetic head's photos: a diffusers pipeline folder in SD 2.1-base's
layout that runs the product's real path (VAE, CLIP text, view prompts, CFG, LoRA on the UNet) on a CPU.

    python tools/train_tiny_sd.py                       # rebuilds esd_gs/models/tiny-sd (~45 min, 2 cores)
    python tools/train_tiny_sd.py --out /tmp/t --vae-steps 20 --unet-steps 20   # a smoke run
    python tools/train_tiny_sd.py --out esd_gs/models/tiny-sd-web --front-share 0.65 --view-caption-share 0.2 \
        --view-caption-error 0.5 --check-samples 256     # tiny-sd-web (web data's flaws; its card has the rest)

1. photos: the head from azimuths uniform on the circle, at the world's elevations, radius and field of view
   (the fair photo set: ESD's optimum is then the true head), on white; or with web data's two flaws
   (tiny-sd-web): a front-biased photo set and view captions that are rare and often wrong;
2. an AutoencoderKL (2x downsampling, 4 latent channels), its scaling_factor set so the photos' latents have
   unit variance (SD's 0.18215 plays that role);
3. a small CLIP text encoder (character tokenizer) and the UNet, trained together on the latents with the
   captions the prior sends: the prompt, the prompt + a view suffix by the prior's azimuth thresholds, and
   empty captions for classifier-free guidance. EMA weights are saved.
Then it samples with diffusers' StableDiffusionPipeline, checks the samples against the true head
(esd_gs.synthetic.sd_check) and writes the model card (README.md, samples.png) into the folder.
Deterministic from --seed.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
import tyro
from tqdm import tqdm

from esd_gs.commands.bench import char_tokenizer
from esd_gs.core.cameras import view_direction
from esd_gs.guidance.stable_diffusion import SD_SCHEDULE, VIEW_SUFFIX
from esd_gs.io.media import grid, save_png
from esd_gs.synthetic.config import SyntheticConfig
from esd_gs.synthetic.janus import BINS
from esd_gs.synthetic.photos import cached_photos, photo_angles
from esd_gs.synthetic.sd_check import VIEWS, check_pipeline, sampler_fairness
from esd_gs.worlds.stable_diffusion import SYNTHETIC_HEAD

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "esd_gs" / "models" / "tiny-sd"
MAX_TOKENS = 32


@dataclass
class Args:
    out: Path = DEFAULT_OUT
    seed: int = 0
    prompt: str = "a head"
    photos: int = 6144
    data_seed: int = 1234
    """Seed of the photo angles (the synthetic world's default photo set)."""
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    ema_decay: float = 0.999
    high_noise_cap: float = 10.0
    """The UNet's loss at timestep t weighs min(1/alphabar_t, this), normalised to mean 1 over t (1: SD's plain
    epsilon loss). 1/alphabar is what a v-prediction loss puts on an epsilon error: it favours high t, where
    the view is decided (with the plain loss, 5000 steps gave a front-biased model: ODE samplers 0.33-0.89
    of uniform's azimuth entropy)."""
    noise_offset: float = 0.0
    """Std of a per-image, per-channel constant added to the training noise (diffusers' --noise_offset, "offset
    noise"): SD's schedule leaves signal in x_T's mean that pure-noise sampling lacks, so models under-produce
    images whose mean is far from the average (here the dark back of the head?). Tried at 0.1 (2026-11-30,
    otherwise the shipped model's settings): no fairer (plain prompt PNDM 0.887, DDIM 0.325, Euler ancestral
    0.891 of uniform's entropy, against 0.883 / 0.318 / 0.919), so the shipped model has none."""
    front_share: float = 0.25
    """Share of photos within 45 deg of the front (SyntheticConfig.front_share): 0.25 is uniform in azimuth."""
    view_caption_error: float = 0.0
    """Share of photos whose view caption names another view (either of the two others, equally likely): web
    captions are sometimes wrong. Fixed per photo, drawn from the data seed."""
    caption_dropout: float = 0.1
    """Share of empty captions (the unconditional branch of classifier-free guidance)."""
    view_caption_share: float = 0.5
    """Of the other captions, the share with a view suffix (the rest: the plain prompt)."""
    check_samples: int = 64
    """Samples per prompt for the model card's check."""
    check_steps: int = 25
    """Sampler steps of each check sample."""
    check_only: bool = False
    """Check an existing --out folder and rewrite its model card (its training.json gives the settings)."""


def cosine_lr(step: int, steps: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def build_models(vocab_size: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), layers_per_block=1,
                        latent_channels=4, norm_num_groups=16, sample_size=32, mid_block_add_attention=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=64))
    # attention only at 8x8 and 4x4: at 16x16 it would cost more than the rest of the UNet
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 96),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
    return vae, text_encoder, unet


def train_vae(vae, images: torch.Tensor, args: Args, g: torch.Generator) -> list[float]:
    """Reconstruction (MSE on [-1,1]) + a small KL, on posterior samples; returns the loss every 100 steps."""
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, args.vae_steps))
    losses, running = [], 0.0
    for step in (bar := tqdm(range(args.vae_steps), desc="vae", mininterval=5)):
        x = images[torch.randint(len(images), (args.vae_batch,), generator=g)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        loss = F.mse_loss(vae.decode(z).sample, x) + args.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 100 == 0 or step + 1 == args.vae_steps:
            losses.append(running / (step % 100 + 1))
            running = 0.0
            bar.set_postfix(loss=f"{losses[-1]:.5f}")
    return losses


def caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids as the prior and the pipeline make them: padded to model_max_length."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def train_unet(unet, text_encoder, latents: torch.Tensor, caption_index: torch.Tensor, ids: torch.Tensor,
               args: Args, g: torch.Generator) -> tuple[list[float], object]:
    """Epsilon-prediction denoising loss at t ~ U{0..999} (weighted: Args.high_noise_cap); the caption of each
    row is drawn per step (caption_index[i] is photo i's view caption, ids[0] empty, ids[1] the plain
    prompt). Returns the loss every 100 steps and the EMA of both networks' weights."""
    from diffusers.training_utils import EMAModel

    from esd_gs.guidance.stable_diffusion import sd_scheduler

    scheduler = sd_scheduler()
    weight = (1 / scheduler.alphas_cumprod).clamp(max=args.high_noise_cap)
    weight = weight / weight.mean()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, args.unet_steps))
    ema = EMAModel(params, decay=args.ema_decay)
    losses, running = [], 0.0
    for step in (bar := tqdm(range(args.unet_steps), desc="unet", mininterval=5)):
        i = torch.randint(len(latents), (args.unet_batch,), generator=g)
        u = torch.rand(args.unet_batch, generator=g)
        plain = torch.ones_like(i)
        caption = torch.where(u < args.caption_dropout, torch.zeros_like(i),
                              torch.where(u < args.caption_dropout + (1 - args.caption_dropout) * args.view_caption_share,
                                          caption_index[i], plain))
        text = text_encoder(ids)[0][caption]
        noise = torch.randn(latents[i].shape, generator=g)
        if args.noise_offset:
            noise = noise + args.noise_offset * torch.randn(*noise.shape[:2], 1, 1, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.unet_batch,), generator=g)
        pred = unet(scheduler.add_noise(latents[i], noise, t), t, encoder_hidden_states=text).sample
        loss = (weight[t] * (pred - noise).square().mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        running += loss.item()
        if (step + 1) % 100 == 0 or step + 1 == args.unet_steps:
            losses.append(running / (step % 100 + 1))
            running = 0.0
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses, ema


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet):
    """The folder as SD 2.1-base ships it (model_index.json, one sub-folder a part; a PNDM scheduler with
    SD's config: betas, epsilon prediction, no sample clipping), fp32 safetensors, no safety checker."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler(**SD_SCHEDULE, prediction_type="epsilon", set_alpha_to_one=False, skip_prk_steps=True,
                              steps_offset=1)
    # SD 2.1-base's config says clip_sample false; without the key, DDIM loaded from it clips the
    # unit-variance latents to [-1, 1] and samples blobs
    scheduler.register_to_config(clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def model_card(args: Args, report: dict, fairness: dict, record: dict) -> str:
    every = lambda losses: ", ".join(f"{x:.4f}" for x in losses[:: max(1, len(losses) // 10)] + losses[-1:])
    r, timings, sizes = report, record["timings"], record["parameters"]
    samplers = "\n".join(f"| {name} | {f['entropy_ratio']:.3f} | {[int(x) for x in f['hist']]} |"
                          for name, f in fairness.items())
    rebuild = " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in asdict(args).items()
                       if k not in ("out", "check_only"))
    name = args.out.name
    if args.front_share == 0.25 and args.view_caption_error == 0:
        about = "It knows nothing else."
        azimuths = ("azimuths uniform on the circle", "the synthetic world's fair photo set and training orbit")
    else:
        about = ("Its data has web photo collections' two flaws, as real Stable Diffusion's has (the ESD paper's "
                 "regime): most photos face the camera, and view words are rare and often wrong. It knows nothing "
                 "else.")
        azimuths = (f"front-biased azimuths ({args.front_share:.0%} within 45 deg of the front, the rest uniform on "
                    "the circle)", "the synthetic world's training orbit")
    wrong = (f" In {args.view_caption_error:.0%} of the photos (fixed by the data seed) the view suffix names one "
             "of the two other views instead." if args.view_caption_error else "")
    return f"""---
license: apache-2.0
library_name: diffusers
tags: [stable-diffusion, text-to-image, esd-gs, synthetic]
---
# {name}: a small Stable Diffusion that knows one object

A diffusers pipeline in Stable Diffusion 2.1-base's layout (`model_index.json`, `unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`; scaled-linear betas 0.00085-0.012, 1000 steps, epsilon
prediction), trained from scratch on a CPU on photos of esd-gs's synthetic head. It lets the product's real
Stable Diffusion path run and be tested on a CPU, with a truth to compare against. {about}

    esd-gs train --preset {name}                 # or --model-path {name} / --model-path <this folder>
    StableDiffusionPipeline.from_pretrained("<this folder>")

## Data
{args.photos} photos of the head (`esd_gs.synthetic.head`), 32x32 on white, rendered by esd-gs's rasterizer
from {azimuths[0]} (data seed {args.data_seed}), elevations uniform in 0-30 deg, radius 1.8,
field of view 50 deg: {azimuths[1]}. Captions drawn per step:
{args.caption_dropout:.0%} empty (for classifier-free guidance); of the rest {args.view_caption_share:.0%}
"{args.prompt}" + the view suffix the prior appends for the photo's azimuth (", front view" below 45 deg,
", back view" above 135 deg, ", side view" between), the others "{args.prompt}".{wrong}

## Networks ({sizes['total_mb']:.1f} MB of fp32 safetensors in all)
- VAE: `AutoencoderKL`, blocks (32, 32), no attention: 2x downsampling, 4 latent channels, latents 16x16;
  scaling_factor {record['scaling_factor']:.4f} (unit variance of the photos' latents). {sizes['vae']/1e6:.2f} M parameters.
- Text: `CLIPTextModel`, 2 layers, width 64, a character-level CLIP tokenizer (letters and commas; other
  characters are unknown), padding to {MAX_TOKENS} tokens. {sizes['text_encoder']/1e6:.2f} M parameters.
- UNet: `UNet2DConditionModel`, blocks (32, 64, 96), cross-attention at 8x8 and 4x4, one layer a block.
  {sizes['unet']/1e6:.2f} M parameters.

## Training (seed {args.seed}; {timings['machine']})
- VAE: {args.vae_steps} steps, batch {args.vae_batch}, AdamW lr {args.vae_lr} (cosine), MSE + {args.kl_weight} KL;
  loss every ~10%: {every(record['vae_losses'])}. Reconstruction RMS on the photos: {record['vae_rms']:.4f}
  (pixels in [0,1]).
- UNet + text encoder: {args.unet_steps} steps, batch {args.unet_batch}, AdamW lr {args.unet_lr} (cosine,
  weight decay 0.01), epsilon loss at t ~ U{{0..999}} weighted min(1/alphabar_t, {args.high_noise_cap:g})
  (normalised to mean 1), offset noise {args.noise_offset:g}, EMA {args.ema_decay} (the saved weights); loss every ~10%:
  {every(record['unet_losses'])}.
- Time: photos {timings['photos']:.0f} s (0 when cached), VAE {timings['vae']:.0f} s, UNet {timings['unet']:.0f} s.

## Check with diffusers' own sampler
`StableDiffusionPipeline` (its PNDM scheduler, {r['steps']} steps, guidance 7.5), {r['samples_per_view']}
samples per prompt, sampler seed {args.seed}; each sample's azimuth is that of its nearest render of the true
head (5 deg x 4 elevations; `esd_gs.synthetic.sd_check`):

| prompt | share in the prompt's view range |
| --- | --- |
| "{args.prompt}, front view" | {r['front_accuracy']:.2f} |
| "{args.prompt}, side view" | {r['side_accuracy']:.2f} |
| "{args.prompt}, back view" | {r['back_accuracy']:.2f} |

"{args.prompt}", azimuth entropy against uniform's over 8 bins (from -180 deg), by sampler ({r['steps']} steps,
guidance 7.5): the samplers target one distribution, so their spread measures the score's error.

| sampler | entropy / log 8 | histogram |
| --- | --- | --- |
{samplers}

"{args.prompt}" (PNDM): {r['plain_front_share']:.2f} of the samples lie within 45 deg of the front (uniform azimuths:
0.25; the photos: {args.front_share:.2f}), {r['plain_face_share']:.2f} within 90 deg (the face in view).

On {args.check_samples} samples the plug-in entropy reads low by about {BINS - 1} / (2 x {args.check_samples}) nats
and spreads by as much: `python benchmarks/tiny_sd_fairness.py` measures the PNDM row on 512 fresh samples,
with an interval.

Nearest training photo (median RMS, pixels in [0,1]): samples {r['sample_nearest_photo_rms']:.4f}; held-out
photos {r['held_out_nearest_photo_rms']:.4f} (the photo set's own spacing), held-out photos through the VAE
{r['vae_held_out_nearest_photo_rms']:.4f} (the closest a sample can come).

![samples](samples.png)

Rows: front view, side view, back view, plain prompt (PNDM).

## Rebuild
    python tools/train_tiny_sd.py {rebuild}      # then: --check-only rewrites this card

`training.json` holds the losses, timings and check figures.
"""


def mislabel(caption_index: torch.Tensor, share: float, g: torch.Generator) -> torch.Tensor:
    """caption_index (2 + index in VIEWS) with `share` of the photos moved to one of the other two views."""
    wrong = torch.rand(len(caption_index), generator=g) < share
    shift = 1 + torch.randint(len(VIEWS) - 1, (len(caption_index),), generator=g)
    return torch.where(wrong, 2 + (caption_index - 2 + shift) % len(VIEWS), caption_index)


def train(args: Args, work: Path, photos: torch.Tensor, cfg: SyntheticConfig) -> dict:
    """Trains the three networks and saves the pipeline into `work`; returns the training record."""
    torch.manual_seed(args.seed)  # the networks' initial weights
    g = torch.Generator().manual_seed(args.seed)
    timings = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    images = photos.permute(0, 3, 1, 2) * 2 - 1
    tokenizer = char_tokenizer(work / "tokenizer-src", MAX_TOKENS)
    vae, text_encoder, unet = build_models(len(tokenizer))

    t0 = time.time()
    vae_losses = train_vae(vae, images, args, g)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(x).latent_dist.mean for x in images.split(256)])
        scale = 1.0 / means.std().item()
        vae.register_to_config(scaling_factor=scale)
        recon = torch.cat([vae.decode(m).sample for m in means[:512].split(256)])
        vae_rms = ((recon - images[:512]) / 2).square().mean().sqrt().item()
    timings["vae"] = time.time() - t0
    print(f"vae: reconstruction RMS {vae_rms:.4f}, scaling_factor {scale:.4f}")

    t0 = time.time()
    azimuth, elevation = photo_angles(cfg)
    captions = ["", args.prompt] + [args.prompt + VIEW_SUFFIX[v] for v in VIEWS]
    caption_index = torch.tensor([2 + VIEWS.index(d) for d in view_direction(azimuth, elevation)])
    caption_index = mislabel(caption_index, args.view_caption_error, torch.Generator().manual_seed(args.data_seed))
    losses, ema = train_unet(unet, text_encoder, means * scale, caption_index, caption_ids(tokenizer, captions),
                             args, g)
    ema.copy_to(list(unet.parameters()) + list(text_encoder.parameters()))
    timings["unet"] = time.time() - t0

    save_pipeline(work, vae, text_encoder.eval(), tokenizer, unet.eval())
    shutil.rmtree(work / "tokenizer-src")
    parameters = {name: sum(p.numel() for p in m.parameters()) for name, m in
                  (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))}
    return {"truth": SYNTHETIC_HEAD, "args": {k: str(v) for k, v in asdict(args).items()}, "scaling_factor": scale,
            "vae_rms": vae_rms, "vae_losses": vae_losses, "unet_losses": losses, "timings": timings,
            "parameters": parameters}


def check_and_card(folder: Path, args: Args, record: dict, cfg: SyntheticConfig, photos: torch.Tensor) -> dict:
    """Samples with diffusers' pipeline, checks against the head, writes samples.png, README.md and
    training.json (the record with the check) into `folder`; returns the check."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    held_cfg = SyntheticConfig(num_images=256, front_share=args.front_share, data_seed=args.data_seed + 1)
    held_out = cached_photos(*photo_angles(held_cfg), held_cfg)
    t0 = time.time()
    report = check_pipeline(pipe, args.prompt, args.check_samples, args.check_samples, args.seed, cfg,
                            steps=args.check_steps, photos=photos, held_out=held_out)
    samples = report.pop("samples")
    fairness = sampler_fairness(pipe, args.prompt, args.check_samples, args.seed + 100, cfg, args.check_steps)
    save_png(folder / "samples.png", grid(torch.cat([samples[k][:8] for k in (*VIEWS, "plain")]), 8, upscale=4))
    record["timings"]["check"] = time.time() - t0
    record["parameters"]["total_mb"] = folder_mb(folder)
    record.update(check=report, sampler_fairness=fairness)
    (folder / "README.md").write_text(model_card(args, report, fairness, record))
    (folder / "training.json").write_text(json.dumps(record, indent=1))
    return report


def args_from_record(record: dict, out: Path) -> Args:
    """The Args a folder was trained with (training.json keeps them as strings)."""
    kinds = {"int": int, "float": float, "str": str}
    values = {f.name: kinds[f.type](record["args"][f.name]) for f in fields(Args)
              if f.type in kinds and f.name in record["args"]}
    return Args(**{**values, "out": out, "check_only": True})


def main(args: Args) -> None:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    if args.check_only:
        record = json.loads((args.out / "training.json").read_text())
        args = args_from_record(record, args.out)
    cfg = SyntheticConfig(num_images=args.photos, front_share=args.front_share, data_seed=args.data_seed)
    t0 = time.time()
    photos = cached_photos(*photo_angles(cfg), cfg)  # [N,32,32,3]
    photos_s = time.time() - t0
    if args.check_only:
        report = check_and_card(args.out, args, record, cfg, photos)
    else:
        work = args.out.with_name(args.out.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        record = train(args, work, photos, cfg)
        record["timings"]["photos"] = photos_s
        report = check_and_card(work, args, record, cfg, photos)
        shutil.rmtree(args.out, ignore_errors=True)
        work.rename(args.out)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}, indent=1))
    print(f"saved {args.out} ({record['parameters']['total_mb']:.1f} MB)")


if __name__ == "__main__":
    main(tyro.cli(Args))
