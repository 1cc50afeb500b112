#!/usr/bin/env python
"""Janus rates of SDS, VSD and ESD in the synthetic world (issue 4's result table).

Every method runs the demo preset (`configs/demo.yaml`: learned variational UNet, equal steps and
settings) for several seeds in four settings: photo-set front share 0.4 or 0.7, without or with
view-dependent prompts. Each run is an `esd-gs train` subprocess (one thread each, `--workers` at a
time) that writes janus.json; finished runs are reused, so an interrupted benchmark continues.

Outputs: docs/results/janus.json ({setting: {method: {janus, front_share, view_error_deg,
view_variety: per-seed lists}}}), the rates table in docs/results.md (between its table markers; the
text around them is kept) and docs/results/strip_<method>.png (turntable frames of the `main`
setting, one row per seed). `main` is the first setting, most realistic first, where SDS's Janus
rate is >= 0.6.

    python benchmarks/janus.py --seeds 5 --workers 2
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tyro

REPO = Path(__file__).resolve().parents[1]
METHODS = {"sds": ("sds", 0.0), "vsd": ("vsd", 0.0), "esd_lam0.25": ("esd", 0.25), "esd_lam0.5": ("esd", 0.5),
           "esd_lam0.75": ("esd", 0.75), "esd_lam1.0": ("esd", 1.0)}
# most realistic first: real photo collections are strongly front-biased, and users add view prompts
SETTINGS = {"front0.7-viewprompts": (0.7, True), "front0.4-viewprompts": (0.4, True),
            "front0.7": (0.7, False), "front0.4": (0.4, False)}
METRICS = ("janus", "front_share", "view_error_deg", "view_variety")
STRIP_FRAMES = 8


@dataclass
class Args:
    seeds: int = 5
    workers: int = 2
    """Training subprocesses at a time (each single-threaded)."""
    runs_dir: Path = REPO / "outputs" / "bench-janus"
    results_dir: Path = REPO / "docs" / "results"
    steps: int | None = None
    """Override the demo preset's steps (default: the preset's)."""


def run_one(args: Args, setting: str, method: str, seed: int) -> dict:
    front_share, view_prompts = SETTINGS[setting]
    guidance, lam = METHODS[method]
    name = f"{setting}-{method}-s{seed}"
    report = args.runs_dir / name / "janus.json"
    if not report.is_file():
        cmd = [str(Path(sys.executable).with_name("esd-gs")), "train", "--preset", "demo", "--guidance", guidance,
               "--lam", str(lam), "--seed", str(seed), "--synthetic.front-share", str(front_share),
               "--prior.view-dependent-prompt" if view_prompts else "--prior.no-view-dependent-prompt",
               "--output-dir", str(args.runs_dir), "--run-name", name, "--overwrite", "--log.no-progress",
               "--log.preview-every", "0"]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    return json.loads(report.read_text())


def strip(args: Args, setting: str, method: str, seeds: int) -> np.ndarray:
    """Rows = seeds, columns = STRIP_FRAMES turntable frames (azimuth 0 = the true front)."""
    rows = []
    for seed in range(seeds):
        frames = iio.imread(args.runs_dir / f"{setting}-{method}-s{seed}" / "turntable.gif")[..., :3]
        rows.append(np.concatenate(list(frames[:: len(frames) // STRIP_FRAMES][:STRIP_FRAMES]), axis=1))
    return np.concatenate(rows, axis=0)


def write_table(path: Path, table: str) -> None:
    """Replaces the text between the table markers of `path` (creating the file if needed)."""
    start, end = "<!-- janus table: written by benchmarks/janus.py -->", "<!-- end of janus table -->"
    text = path.read_text() if path.is_file() else f"# Results\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def rate(values) -> float:
    return sum(values) / len(values)


def main() -> None:
    args = tyro.cli(Args)
    jobs = [(s, m, seed) for seed in range(args.seeds) for s in SETTINGS for m in METHODS]
    with ThreadPoolExecutor(args.workers) as pool:
        reports = list(pool.map(lambda job: run_one(args, *job), jobs))
    results = {s: {m: {k: [] for k in METRICS} for m in METHODS} for s in SETTINGS}
    for (s, m, _), report in zip(jobs, reports):
        for k in METRICS:
            results[s][m][k].append(int(report[k]) if k == "janus" else report[k])

    main_setting = next((s for s in SETTINGS if rate(results[s]["sds"]["janus"]) >= 0.6), None)
    named = {("main" if s == main_setting else s): v for s, v in results.items()}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "janus.json").write_text(json.dumps(named, indent=1) + "\n")
    if main_setting:
        for m in METHODS:
            iio.imwrite(args.results_dir / f"strip_{m}.png", strip(args, main_setting, m, args.seeds))

    lines = ["| setting | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for s in SETTINGS:
        label = f"**main** ({s})" if s == main_setting else s
        cells = [f"{rate(results[s][m]['janus']):.1f} ({np.mean(results[s][m]['view_error_deg']):.0f} deg, "
                 f"{np.mean(results[s][m]['view_variety']):.2f})" for m in METHODS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    write_table(args.results_dir.parent / "results.md", table)
    print(table)
    print(f"main setting: {main_setting}")


if __name__ == "__main__":
    main()
