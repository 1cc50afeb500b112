"""`esd-gs bench raster|step`: speed figures as one JSON object (docs/benchmarks.md records them).

raster: forward and forward+backward of a random Gaussian blob seen from one orbit camera.
step:   one whole training step split into its components. Default: the synthetic demo (CPU-sized);
        --full-size: Stable Diffusion 2.1-base's architecture with random weights (same FLOPs as the
        real model, no download), FLOPs counted by torch's FlopCounterMode.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import resource
import statistics
import string
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG, make_cameras
from ..core.gaussians import points_in_ball, rgb_to_sh0, splats_from_tensors
from ..errors import UserError
from .args import parse

HOPPER_BF16_TFLOPS = 800.0  # dense bf16 peak of an H100/H200 (an H200 measured 769-798 here): the floor


@dataclass
class RasterArgs:
    """Time the rasterizer's forward and forward+backward passes."""

    num_gaussians: int = 10_000
    resolution: int = 128
    cameras: int = 1
    backend: Literal["torch", "gsplat"] = "torch"
    repeats: int = 10
    """Timed repetitions after two warm-up calls; the median is reported."""
    seed: int = 0
    json: bool = False


@dataclass
class StepArgs:
    """Time one training step, per component."""

    guidance: Literal["sds", "vsd", "esd"] = "esd"
    full_size: bool = False
    """Stable Diffusion 2.1-base architecture (random weights) instead of the synthetic demo."""
    resolution: int | None = None
    """Render resolution; default 512 for --full-size, the demo's 32 otherwise."""
    channel_scale: float = 1.0
    """--full-size only: UNet/VAE widths times this (1, 0.5, 0.25): a reduced config for CPU checks."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU."""
    model_path: str | None = None
    """--full-size only: load this Stable Diffusion folder or id (as `train --model-path`) instead of random
    weights in the architecture of 2.1-base."""
    camera_map_pins: int = 0
    """Give the variational network the camera map of this many pinned grids (0: the preset's, none)."""
    densify: bool = True
    """Keep the preset's densification on (gsplat's strategy runs at its refine steps)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """Rasterizer (auto: gsplat on CUDA, ours on CPU)."""
    steps: int = 10
    """Timed steps without synchronisation (it/s as in training); then as many with each component timed."""
    warmup: int = 3
    """Untimed steps first (allocations, cuDNN's choices, the first refine's growth)."""
    eager: bool = False
    """Separate UNet calls for the prior and the variational score (`train --eager`) instead of one fused call."""
    capture: bool = False
    """CUDA: the variational score's training step as one CUDA graph (`--variational.capture`)."""
    prior_capture: bool = False
    """CUDA: the one UNet call of the prior and the branches replayed from CUDA graphs (`--prior.capture`)."""
    count_ops: bool = False
    """Also count the operations torch dispatches in one step, by component: on a GPU each is about one kernel
    launch, so this is what a launch-bound step's time follows (counted the same on a CPU)."""
    device: str = "auto"
    json: bool = False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def random_blob(n: int, seed: int = 0, device="cpu"):
    """n Gaussians filling a ball of radius 0.5, sizes 0.01-0.04, random colours and orientations."""
    g = torch.Generator().manual_seed(seed)
    return splats_from_tensors({
        "means": points_in_ball(n, 0.5, g),
        "scales": torch.log(0.01 + 0.03 * torch.rand(n, 3, generator=g)),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.logit(0.2 + 0.7 * torch.rand(n, generator=g)),
        "sh0": rgb_to_sh0(torch.rand(n, 3, generator=g))[:, None],
        "shN": torch.zeros(n, 0, 3),
    }, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_raster(args: RasterArgs) -> dict:
    from ..render import render

    if args.num_gaussians < 1 or args.cameras < 1 or args.resolution < 8 or args.repeats < 1:
        raise UserError(f"--num-gaussians, --cameras and --repeats must be at least 1 and --resolution at least 8 "
                        f"(got {args.num_gaussians}, {args.cameras}, {args.repeats}, {args.resolution})")
    device = torch.device("cuda" if args.backend == "gsplat" else "cpu")
    if args.backend == "gsplat" and not torch.cuda.is_available():
        raise UserError("--backend gsplat needs a CUDA GPU")
    splats = random_blob(args.num_gaussians, args.seed, device)
    az = torch.linspace(0.0, 360.0, args.cameras + 1)[:-1] + 30.0
    cams = make_cameras(az, VIEW_ELEVATION_DEG, ORBIT_RADIUS, ORBIT_FOVY_DEG, args.resolution)
    bg = torch.ones(args.cameras, 3, device=device)
    fwd, fwd_bwd = [], []
    for i in range(args.repeats + 2):
        _sync(device)
        t0 = time.perf_counter()
        out = render(splats, cams, bg, backend=args.backend, depth=True)
        _sync(device)
        t1 = time.perf_counter()
        (out.rgb.sum() + out.depth.mean()).backward()
        _sync(device)
        t2 = time.perf_counter()
        splats.zero_grad(set_to_none=True)
        if i >= 2:
            fwd.append(1000 * (t1 - t0))
            fwd_bwd.append(1000 * (t2 - t0))
    return {"bench": "raster", "backend": args.backend, "device": device_name(device),
            "num_gaussians": args.num_gaussians, "resolution": args.resolution, "cameras": args.cameras,
            "fwd_ms": statistics.median(fwd), "fwd_bwd_ms": statistics.median(fwd_bwd),
            "visible_gaussians": int((out.info["radii"] > 0).all(-1).sum()), "repeats": args.repeats}


def sd21_modules(channel_scale: float, resolution: int):
    """Stable Diffusion 2.1-base's UNet and VAE configs (widths times `channel_scale`) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if channel_scale not in (1.0, 0.5, 0.25):
        raise UserError(f"--channel-scale must be 1, 0.5 or 0.25 (got {channel_scale})")
    width = lambda cs: tuple(int(c * channel_scale) for c in cs)  # noqa: E731
    groups = int(32 * channel_scale)
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=width((320, 640, 1280, 1280)), norm_num_groups=groups,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=groups,
        block_out_channels=width((128, 256, 512, 512)), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=resolution, scaling_factor=0.18215,
    )
    return unet, vae


def sd21_base_random(channel_scale: float, resolution: int, device, dtype):
    """A prior with Stable Diffusion 2.1-base's VAE and UNet (random weights) and random text embeddings.
    The prior works at `resolution` (512 for the real model)."""
    from diffusers.utils import logging

    from ..guidance.stable_diffusion import VIEW_SUFFIX, StableDiffusionPrior, sd_scheduler

    logging.set_verbosity_error()  # casting random weights with .to(dtype) is what we mean here
    unet, vae = sd21_modules(channel_scale, resolution)
    g = torch.Generator().manual_seed(0)
    text = lambda: torch.randn(1, 77, 1024, generator=g)  # noqa: E731
    cond = {None: text(), **{d: text() for d in VIEW_SUFFIX}}
    return StableDiffusionPrior(vae.to(dtype), unet.to(dtype), sd_scheduler(), text(), cond, device, dtype)


def char_tokenizer(folder: Path, max_length: int):
    """A character-level CLIP tokenizer (letters and commas) whose vocabulary files live in `folder`: real
    CLIP vocabularies are downloads, and the prompts of a benchmark or test need no more."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in list(string.ascii_lowercase) + [","]:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def save_random_sd21(folder: Path, dtype: torch.dtype = torch.float16, variant: str | None = "fp16",
                     channel_scale: float = 1.0, resolution: int = 512, device="cpu") -> Path:
    """A pipeline folder in Stable Diffusion 2.1-base's layout with random weights (UNet and VAE at full size,
    so loading, memory and FLOPs are the real model's; a 2-layer text encoder of SD 2.1's width and a
    character tokenizer, which only embed the prompts once). `variant` "fp16" saves `*.fp16.safetensors`
    only, the usual half-precision download. `device`: where the weights are drawn (a GPU draws 1B in a blink)."""
    from diffusers.utils import logging
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..guidance.stable_diffusion import sd_scheduler

    logging.set_verbosity_error()
    folder = Path(folder)
    torch.manual_seed(0)
    with torch.device(device):
        unet, vae = sd21_modules(channel_scale, resolution)
    unet.to(dtype).save_pretrained(folder / "unet", variant=variant)
    vae.to(dtype).save_pretrained(folder / "vae", variant=variant)
    CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                 num_hidden_layers=2, max_position_embeddings=77, vocab_size=100, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1, hidden_act="gelu", projection_dim=512)
                  ).to(dtype).save_pretrained(folder / "text_encoder", variant=variant)
    char_tokenizer(folder / "tokenizer", 77).save_pretrained(folder / "tokenizer")
    sd_scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return folder


def _step_config(args: StepArgs, device: torch.device, out_dir: str):
    from ..config import load_preset

    cfg = load_preset("demo") if not args.full_size else load_preset("sd21-esd")
    cfg = dataclasses.replace(cfg, guidance=args.guidance, output_dir=out_dir, run_name="bench", steps=10**6,
                              device=str(device))
    cfg.log.progress = False
    cfg.eager, cfg.variational.capture, cfg.prior.capture = args.eager, args.capture, args.prior_capture
    cfg.densify.enabled = args.densify
    cfg.dtype, cfg.model_path = args.dtype, args.model_path
    if args.camera_map_pins:
        cfg.variational.camera_map, cfg.variational.camera_map_pins = True, args.camera_map_pins
    cfg.render.backend = args.backend
    if args.resolution:
        cfg.render.resolution = args.resolution
        if not args.full_size:
            cfg.synthetic.resolution = args.resolution
    elif args.full_size:
        cfg.render.resolution = 512
    return cfg


def _timed_steps(trainer, steps: int, device: torch.device) -> float:
    """Milliseconds per step of `steps` training steps, synchronised at the ends only."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    _sync(device)
    return 1000 * (time.perf_counter() - t0) / steps


class OperationCounter(TorchDispatchMode):
    """Counts the operations torch dispatches, filed under the timer's current section ("other" outside any)."""

    def __init__(self, timer):
        super().__init__()
        self.timer, self.counts = timer, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.timer.section or "other"] += 1
        return func(*args, **(kwargs or {}))


def count_operations(trainer) -> dict:
    """Operations of one training step, in all and by component."""
    with OperationCounter(trainer.timer) as counter:
        trainer.train_step()
    return {"operations": sum(counter.counts.values()), "operations_by_component": dict(counter.counts.most_common())}


def bench_step(args: StepArgs) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from ..core.device import pick_device, pick_dtype
    from ..run.trainer import Trainer
    from ..worlds.stable_diffusion import StableDiffusionWorld

    if args.steps < 1 or args.warmup < 0 or not args.channel_scale > 0 or (args.resolution or 8) < 8:
        raise UserError(f"--steps must be at least 1, --warmup at least 0, --channel-scale positive and --resolution "
                        f"at least 8 (got {args.steps}, {args.warmup}, {args.channel_scale}, {args.resolution})")
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.model_path and not args.full_size:
        raise UserError("--model-path needs --full-size")
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = _step_config(args, device, out_dir)
        world = None
        if args.full_size:
            prior = None if args.model_path else sd21_base_random(args.channel_scale, cfg.render.resolution,
                                                                  device, dtype)
            world = StableDiffusionWorld(cfg, device, prior)
        with Trainer(cfg, world) as trainer:
            for _ in range(args.warmup):
                trainer.train_step()
            operations = count_operations(trainer) if args.count_ops else {}
            flops = None
            if args.full_size:
                with FlopCounterMode(display=False) as counter:
                    trainer.train_step()
                flops = counter.get_total_flops()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step_ms = _timed_steps(trainer, args.steps, device)
            trainer.timer.enabled = True
            synced_ms = _timed_steps(trainer, args.steps, device)
            n_gaussians = len(trainer.splats["means"])
    result = {
        "bench": "step", "guidance": args.guidance, "eager": args.eager, "capture": args.capture,
        "prior_capture": args.prior_capture, "full_size": args.full_size,
        "device": device_name(device),
        "dtype": str(dtype).removeprefix("torch."), "resolution": cfg.render.resolution,
        "batch_size": cfg.render.batch_size, "camera_map_pins": cfg.variational.camera_map_pins,
        "num_gaussians": n_gaussians, "steps": args.steps, "step_ms": step_ms, "it_s": 1000.0 / step_ms,
        "step_ms_timed_components": synced_ms,
        "components_ms": {k: v / args.steps for k, v in trainer.timer.ms.items()},
    }
    result |= operations
    if device.type == "cuda":
        result |= {"peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                   "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.full_size:
        result |= {"model_path": args.model_path} if args.model_path else {"channel_scale": args.channel_scale}
        result["tflop_per_step"] = flops / 1e12
        result["tflops"] = flops / 1e12 / (step_ms / 1000)
        result["floor_ms"] = flops / (HOPPER_BF16_TFLOPS * 1e12) * 1000
        result["floor_ratio"] = step_ms / result["floor_ms"]
    return result


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4g}" if not math.isnan(value) else "nan"
        print(f"{key:>18}: {value}")


def cmd_bench(argv: list[str]) -> None:
    kinds = {"raster": (RasterArgs, bench_raster), "step": (StepArgs, bench_step)}
    if not argv or argv[0] not in kinds:
        raise UserError("usage: esd-gs bench {raster,step} [--json] ... (see esd-gs bench raster --help)")
    Args, run = kinds[argv[0]]
    args = parse(Args, argv[1:], f"esd-gs bench {argv[0]}")
    print_result(run(args), args.json)
