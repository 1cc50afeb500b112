"""Is tiny-sd's plain prompt as fair as its photos? The azimuth entropy of many samples, with an interval.
(Any shipped model and prompt: `--model tiny-sd-web --prompt "a head, back view"` measures how often that
model's back view lands in the back range, `view_shares`.)

Issue 24 asks that diffusers' own `StableDiffusionPipeline` sampling the plain prompt gives an 8-bin
azimuth histogram whose entropy is >= 0.9 of uniform's. The model card measures it on 64 samples, where
the plug-in entropy is biased low by about (bins - 1) / (2 n) nats (Miller and Madow), 0.026 of log 8,
and its spread is of the same size. This draws `--samples` on sampler seeds no earlier check used, with
the pipeline's own scheduler (PNDM), steps and guidance as on the model card, and reports the plug-in
ratio with a bootstrap 95% interval, the Miller-Madow corrected ratio, and the share of samples within
45 deg of the front (the photo set's: 0.25).

    python benchmarks/tiny_sd_fairness.py [--samples 512] [--first-seed 5000] [--model tiny-sd-web] [--prompt ...]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from esd_gs.core.cameras import wrap_deg
from esd_gs.io.atomic import write_json
from esd_gs.synthetic.config import SyntheticConfig
from esd_gs.synthetic.janus import BINS
from esd_gs.synthetic.sd_check import (VIEWS, azimuth_entropy_ratio, azimuth_histogram, classify_azimuths,
                                       reference_views, sample, view_of)
from esd_gs.guidance.weights import SHIPPED_MODELS

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    samples: int = 512
    chunk: int = 64  # samples per pipeline call; chunk k uses sampler seed first_seed + k
    first_seed: int = 5000
    steps: int = 25
    guidance: float = 7.5
    prompt: str = "a head"
    model: str = "tiny-sd"
    """A model shipped with esd-gs (esd_gs/models)."""
    bootstrap: int = 2000
    out: Path | None = None
    """Default: docs/results/tiny_sd_fairness.json for tiny-sd's plain prompt, else <model>[_<view>]_fairness.json."""


def summarize(azimuths: torch.Tensor, bootstrap: int, seed: int = 0) -> dict:
    """Histogram, plug-in (sd_check's, as on the model card) and Miller-Madow entropy ratios, a bootstrap
    interval over the samples, front share."""
    counts = azimuth_histogram(azimuths)
    n, occupied, ratio = len(azimuths), int((counts > 0).sum()), azimuth_entropy_ratio(azimuths)
    rng = torch.Generator().manual_seed(seed)
    boot = torch.tensor([azimuth_entropy_ratio(azimuths[torch.randint(n, (n,), generator=rng)])
                         for _ in range(bootstrap)], dtype=torch.float64)
    return {"samples": n, "hist": [int(c) for c in counts], "entropy_ratio": ratio,
            "entropy_ratio_ci95": torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)).tolist(),
            "entropy_ratio_miller_madow": ratio + (occupied - 1) / (2 * n) / math.log(BINS),
            "front_share": (wrap_deg(azimuths).abs() < 45.0).double().mean().item(),
            "view_shares": {v: sum(x == v for x in view_of(azimuths)) / n for v in VIEWS}}


def main(args: Args) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_MODELS[args.model])
    pipe.set_progress_bar_config(disable=True)
    references = reference_views(SyntheticConfig())
    t0, azimuths = time.time(), []
    for k in range(math.ceil(args.samples / args.chunk)):
        n = min(args.chunk, args.samples - k * args.chunk)
        images = sample(pipe, args.prompt, n, args.first_seed + k, args.steps, args.guidance)
        azimuths.append(classify_azimuths(images, references))
        print(f"{sum(map(len, azimuths))}/{args.samples} samples, {time.time() - t0:.0f} s", flush=True)
    azimuths = torch.cat(azimuths).double()
    result = {"model": args.model, "scheduler": type(pipe.scheduler).__name__, "prompt": args.prompt,
              "steps": args.steps, "guidance": args.guidance, "seeds": [args.first_seed, args.first_seed + k],
              "chunk": args.chunk, **summarize(azimuths, args.bootstrap), "seconds": time.time() - t0,
              "azimuths_deg": azimuths.tolist()}
    view = args.prompt.rsplit(", ", 1)[1].removesuffix(" view") if ", " in args.prompt else None
    default = "tiny_sd" if args.model == "tiny-sd" else args.model.replace("-", "_")
    write_json(args.out or REPO / "docs" / "results" / f"{default}{f'_{view}' if view else ''}_fairness.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "azimuths_deg"}, indent=1))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
