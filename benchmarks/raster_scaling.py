#!/usr/bin/env python
"""Rasterizer cost against Gaussians and pixels: runs `esd-gs bench raster` over a grid and fits the
exponents of fwd+bwd time ~ N^a (at 128x128) and ~ pixels^b (at 10,000 Gaussians).

    python benchmarks/raster_scaling.py [--backend torch]
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BACKEND = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "torch"
EXE = str(Path(sys.executable).with_name("esd-gs"))


def bench(n: int, res: int) -> dict:
    out = subprocess.run([EXE, "bench", "raster", "--num-gaussians", str(n), "--resolution", str(res),
                          "--backend", BACKEND, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    by_n = [bench(n, 128) for n in (2500, 5000, 10000, 20000, 40000)]
    by_res = [bench(10000, r) for r in (64, 128, 256, 512)]
    for r in by_n + by_res:
        print(f"{r['num_gaussians']:>6} Gaussians {r['resolution']:>4}px  fwd {r['fwd_ms']:7.1f} ms  "
              f"fwd+bwd {r['fwd_bwd_ms']:7.1f} ms")
    print(f"exponent in Gaussians (128px): {exponent([r['num_gaussians'] for r in by_n], [r['fwd_bwd_ms'] for r in by_n]):.2f}")
    print(f"exponent in pixels (10k Gaussians): "
          f"{exponent([r['resolution'] ** 2 for r in by_res], [r['fwd_bwd_ms'] for r in by_res]):.2f}")
    print(f"device: {by_n[0]['device']}")


if __name__ == "__main__":
    main()
