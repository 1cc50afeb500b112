#!/usr/bin/env python
"""The device check behind check.sh: one run on the GPU machine that always brings back numbers.

Sections, in order, each recorded in OUT/gpu_report.json as run / failed (with the error) / skipped
(with why), the report rewritten after every section so a killed run still leaves what it measured:
  environment       versions, GPU, nvcc
  gsplat_build      JIT-compiles gsplat's CUDA extension in a subprocess (MAX_JOBS = cores,
                    TORCH_CUDA_ARCH_LIST=9.0), timed; its exact error when it fails
  cuda_tests        pytest -m cuda: gsplat vs our torch rasterizer (forward, backward), a CUDA training step
  bench_raster      esd-gs bench raster --backend gsplat at 10k / 100k / 1M Gaussians, 512x512
  bench_step_full   esd-gs bench step --full-size (SD 2.1-base architecture, random weights, bf16, 512)
  train_sd21_esd    300 steps of the sd21-esd preset on random full-size weights, densifying from step 50:
                    Gaussian count over time, it/s, peak memory
Without gsplat the later sections use our torch rasterizer (the `torch` backend) and say so. A global
deadline (--budget-s) skips what would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("environment", "gsplat_build", "cuda_tests", "bench_raster", "bench_step_full", "train_sd21_esd")


class Deadline(Exception):
    pass


class Report:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.t0, self.budget_s = out, time.monotonic(), budget_s
        self.data = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget_s,
                     "sections": {name: {"status": "pending"} for name in SECTIONS}}
        self.write()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / ".gpu_report.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_report.json")

    def skip(self, name: str, why: str) -> None:
        self.data["sections"][name] = {"status": "skipped", "why": why}
        print(f"[{name}] skipped: {why}", flush=True)
        self.write()

    def run(self, name: str, fn, limit_s: float, needs_s: float = 0.0):
        """Runs fn() (returning a dict of figures) under an alarm of min(limit_s, time left)."""
        left = self.left()
        if left < needs_s or left < 5:
            return self.skip(name, f"out of time ({left:.0f} s left)")
        limit = int(max(5, min(limit_s, left)))
        print(f"[{name}] running (limit {limit} s)", flush=True)

        def alarm(signum, frame):
            raise Deadline(f"stopped after {limit} s")

        signal.signal(signal.SIGALRM, alarm)
        signal.alarm(limit)
        t0 = time.monotonic()
        try:
            result = {"status": "run", **fn()}
        except Exception as e:  # noqa: BLE001 - every failure is a finding to report
            result = {"status": "failed", "error": "".join(traceback.format_exception_only(e)).strip()[-3000:],
                      "traceback": traceback.format_exc()[-3000:]}
        finally:
            signal.alarm(0)
        result["seconds"] = round(time.monotonic() - t0, 1)
        self.data["sections"][name] = result
        print(f"[{name}] {result['status']} in {result['seconds']} s: "
              f"{json.dumps({k: v for k, v in result.items() if k != 'traceback'}, default=str)[:1500]}", flush=True)
        self.write()
        return result


def environment() -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "diffusers", "transformers", "peft", "gsplat", "tyro", "plyfile", "numba", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True) if _has("nvcc") else None
    info = {"python": platform.python_version(), "versions": versions, "cuda_available": torch.cuda.is_available(),
            "torch_cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
            "nvcc": nvcc.stdout.strip().splitlines()[-1] if nvcc and nvcc.returncode == 0 else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}"}
    return info


def _has(program: str) -> bool:
    from shutil import which

    return which(program) is not None


def gsplat_build(limit_s: float) -> dict:
    """Builds in a child process so a failure or hang cannot take this run with it."""
    code = ("import time; t=time.time(); import gsplat.cuda._backend as b; "
            "print('GSPLAT_OK' if b._C is not None else 'GSPLAT_NONE', round(time.time()-t, 1))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit_s,
                              env=os.environ)
    except subprocess.TimeoutExpired:
        return {"built": False, "error": f"no result within {limit_s:.0f} s"}
    ok = "GSPLAT_OK" in done.stdout
    result = {"built": ok, "max_jobs": os.environ.get("MAX_JOBS"),
              "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST")}
    if ok:
        result["build_s"] = float(done.stdout.split("GSPLAT_OK")[1].split()[0])
    else:
        result["error"] = (done.stderr or done.stdout).strip()[-4000:]
    return result


def cuda_tests(limit_s: float) -> dict:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_cuda.py")], capture_output=True, text=True,
                          timeout=limit_s, cwd=REPO)
    lines = done.stdout.strip().splitlines()
    return {"exit_code": done.returncode, "summary": lines[-1] if lines else "",
            "output_tail": "\n".join(lines[-40:])}


def bench_raster(backend: str) -> dict:
    from esd_gs.bench import RasterArgs, bench_raster as run

    sizes = (10_000, 100_000, 1_000_000) if backend == "gsplat" else (10_000,)
    return {"backend": backend, "results": [run(RasterArgs(num_gaussians=n, resolution=512, backend=backend,
                                                           repeats=10)) for n in sizes]}


def bench_step_full(backend: str) -> dict:
    from esd_gs.bench import StepArgs, bench_step

    return bench_step(StepArgs(full_size=True, dtype="bfloat16", resolution=512, steps=10, warmup=3,
                               backend=backend, json=True))


def train_sd21_esd(backend: str, steps: int = 300) -> dict:
    import torch

    from esd_gs.bench import sd21_base_random
    from esd_gs.config import load_preset
    from esd_gs.train import Trainer
    from esd_gs.worlds.stable_diffusion import StableDiffusionWorld

    cfg = load_preset("sd21-esd")
    # the run folder stays on the machine: only the report and the log travel back
    cfg.steps, cfg.output_dir, cfg.run_name, cfg.overwrite = steps, Path("/tmp/esd-gs-gpu-check"), "sd21-esd", True
    cfg.render.backend = backend
    cfg.densify.refine_start_iter, cfg.densify.refine_every = 50, 50
    cfg.log.progress, cfg.log.preview_every, cfg.log.checkpoint_every = False, 100, 1000
    cfg.log.turntable_frames = 12
    device = torch.device("cuda")
    world = StableDiffusionWorld(cfg, device, sd21_base_random(1.0, 512, device, torch.bfloat16))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    trainer = Trainer(cfg, world)
    counts, refines, t_steps = [], [], time.monotonic()
    try:
        while trainer.step < cfg.steps:
            logs = trainer.train_step()
            if trainer.step % 25 == 0 or "grad2d_q50" in logs:
                counts.append((trainer.step, logs["n_gaussians"]))
            if "grad2d_q50" in logs:
                refines.append({k: logs[k] for k in ("step", "grad2d_q50", "grad2d_q90", "grad2d_q99", "grown_share")})
    except Deadline:
        pass  # report the steps that fitted
    steps_s = time.monotonic() - t_steps
    return {"backend": backend, "steps_done": trainer.step, "it_s": trainer.step / steps_s,
            "setup_s": round(t_steps - t0, 1), "gaussians": counts, "refines": refines,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "max_gaussians_cap": cfg.densify.max_gaussians}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU machine: run nothing that needs a GPU")
    parser.add_argument("--budget-s", type=float, default=510.0, help="everything must end within this")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, args.budget_s)
    report.run("environment", environment, 60)
    if args.dry_run:
        for name in SECTIONS[1:]:
            report.skip(name, "dry run")
        return
    import torch

    if not torch.cuda.is_available():
        for name in SECTIONS[1:]:
            report.skip(name, "no CUDA device")
        return
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    build = report.run("gsplat_build", lambda: gsplat_build(min(270.0, report.left() - 200)), 280, needs_s=230)
    backend = "gsplat" if build and build.get("built") else "torch"
    report.data["backend"] = backend
    report.run("cuda_tests", lambda: cuda_tests(min(120.0, report.left() - 150)), 130, needs_s=160)
    report.run("bench_raster", lambda: bench_raster(backend), 60, needs_s=120)
    report.run("bench_step_full", lambda: bench_step_full(backend), 90, needs_s=90)
    report.run("train_sd21_esd", lambda: train_sd21_esd(backend), max(10.0, report.left() - 5))


if __name__ == "__main__":
    main()
