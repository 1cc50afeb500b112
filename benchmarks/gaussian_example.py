#!/usr/bin/env python
"""The ESD paper's 2-D Gaussian example through our distillation code (esd_gs/gaussian_example.py).

    python benchmarks/gaussian_example.py --json          # one JSON line per method
    python benchmarks/gaussian_example.py --seeds 0 1 2   # the same for more seeds (means in the table)

Prints sds, vsd, esd lam 0.5 and esd lam 1.0 with mean_err, cov_rel_err (||cov_q - cov_p|| / ||cov_p||,
Frobenius) and cov_norm_ratio (||cov_q|| / ||cov_p||), and writes docs/images/gaussian_example.png:
samples of p (blue) and of the fitted q (orange) for the four methods, seed = the first seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw

from esd_gs.guidance.gaussian_example import GaussianExampleConfig, fit_gaussian

REPO = Path(__file__).resolve().parents[1]
METHODS = [("sds", 0.0), ("vsd", 0.0), ("esd", 0.5), ("esd", 1.0)]
KEYS = ("method", "lam", "seed", "mean_err", "cov_rel_err", "cov_norm_ratio")
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 2000
    json: bool = False
    png: Path = REPO / "docs" / "images" / "gaussian_example.png"
    samples: int = 1000


def label(method: str, lam: float) -> str:
    return f"ESD (lam {lam:g})" if method == "esd" else method.upper()


def panel(result: dict, samples: int, size: int = 300) -> Image.Image:
    """p's and q's samples (the same standard-normal seeds) scattered in p's +-4 sigma box."""
    g = torch.Generator().manual_seed(1)
    seeds = torch.randn(2, samples, 2, generator=g)
    (mu_p, L_p), (mu_q, L_q) = result["p"], result["q"]
    p, q = mu_p + seeds[0] @ L_p.T, mu_q + seeds[1] @ L_q.T
    half = 4 * float(torch.linalg.eigvalsh(L_p @ L_p.T).max().sqrt())
    lo = mu_p.numpy() - half
    image = Image.new("RGB", (size, size + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 24, size - 1, size + 23], outline=(160, 160, 160))
    for points, colour in ((p, BLUE), (q, ORANGE)):
        xy = (points.numpy() - lo) / (2 * half) * size
        for x, y in xy:
            if 0 <= x < size and 0 <= y < size:
                draw.ellipse([x - 2, size - y + 22, x + 2, size - y + 26], fill=colour)
    draw.text((6, 5), f"{label(result['method'], result['lam'])}: |cov_q|/|cov_p| = {result['cov_norm_ratio']:.2f}",
              fill=(0, 0, 0))
    return image


def main() -> None:
    args = tyro.cli(Args)
    rows, first = [], []
    for seed in args.seeds:
        for method, lam in METHODS:
            result = fit_gaussian(GaussianExampleConfig(method=method, lam=lam, steps=args.steps, seed=seed))
            row = {k: result[k] for k in KEYS}
            rows.append(row)
            if seed == args.seeds[0]:
                first.append(result)
            print(json.dumps(row) if args.json else
                  "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    panels = [np.asarray(panel(r, args.samples)) for r in first]
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels, axis=1)).save(args.png)
    if not args.json:
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
