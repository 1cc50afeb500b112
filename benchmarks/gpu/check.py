#!/usr/bin/env python
"""The device check behind check.sh: one run of at most 360 s on the GPU machine that always brings back numbers.

Phases, each with a time budget (PHASES; they sum to <= 360 s) and recorded in OUT/gpu_report.json as
run / failed (with the error) / skipped (with why) the moment it ends, so a killed run keeps what it measured:
  environment   versions, GPU, nvcc; starts gsplat's JIT build in a child process (MAX_JOBS = cores - 2,
                TORCH_CUDA_ARCH_LIST=9.0) that compiles beside the next phase; with the wheel that
                build_gsplat.sh built ahead in .whl/, gsplat loads that instead (prebuilt: true)
  prepare       writes random weights in Stable Diffusion 2.1-base's layout (full-size UNet and VAE, fp16
                variant files only: the usual half-precision download) for the phases below to load
  gsplat_build  waits for the build: its time, or its exact error
  parity        pytest -m cuda: gsplat against our torch rasterizer (forward, backward), a CUDA training step
  raster        gsplat forward / forward+backward at 100k and 1M Gaussians, 512x512
  step_bf16_eager  full-size ESD step at 512, bf16, pinned camera map (64 grids), the prior and the
                variational score as separate UNet calls (`--eager`): it/s unsynchronised, ms per component,
                peak allocated and reserved memory, TFLOP per step, ratio to the bf16 floor
  step_bf16     the same on the default path (one fused UNet call for the prior and the branches)
  step_bf16_captured  the same with the variational score's training step as a CUDA graph (--variational.capture)
  step_bf16_graphed  and the fused UNet call replayed from CUDA graphs as well (--prior.capture)
  cli_train     `esd-gs train --preset sd21-esd` through the CLI on those weights: 100 steps at 512, densifying,
                a checkpoint and splats.ply; the median it/s after 20 steps
  preview       `esd-gs train --preset sd21-preview` through the CLI: exit code, the training's wall time, steps
A phase that needs gsplat while the build still runs waits until the phases after it have run; without
gsplat the others use our torch rasterizer and say so.
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
WEIGHTS = Path("/tmp/esd-gs-gpu-check/sd21-random")
PHASES = {  # name: budget in seconds (the whole check: their sum, <= 360)
    "environment": 5, "prepare": 30, "gsplat_build": 58, "parity": 45, "raster": 5,
    "step_bf16_eager": 22, "step_bf16": 22, "step_bf16_captured": 22, "step_bf16_graphed": 22, "cli_train": 52,
    "preview": 75,
}  # 2026-11-30 on an H200: prepare 19 s, gsplat's build 64 s after it (81 s in all), parity over 30 s (its pytest
# start, the tiny pipeline's build), a step phase 15 s, the CLI's 50 steps 43 s. gsplat_build: ~1 s with the wheel
# build_gsplat.sh makes; should gsplat compile after all, it goes on beside the phases after (parity, raster wait)
NEEDS_GSPLAT = ("parity", "raster")


class Deadline(Exception):
    pass


class Report:
    def __init__(self, out: Path):
        self.out, self.t0 = out, time.monotonic()
        self.data = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": sum(PHASES.values()),
                     "phases": {name: {"status": "pending", "budget_s": s} for name, s in PHASES.items()}}
        self.write()

    def left(self) -> float:
        return self.data["budget_s"] - (time.monotonic() - self.t0)

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / ".gpu_report.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_report.json")

    def skip(self, name: str, why: str) -> None:
        self.data["phases"][name] |= {"status": "skipped", "why": why}
        print(f"[{name}] skipped: {why}", flush=True)
        self.write()

    def run(self, name: str, fn) -> dict:
        """Runs fn() (a dict of figures) under an alarm of its budget, or of the time left if that is less."""
        limit = int(min(PHASES[name], self.left()))
        if limit < 3:
            self.skip(name, f"out of time ({self.left():.0f} s left)")
            return {}
        print(f"[{name}] running (budget {limit} s)", flush=True)

        def alarm(signum, frame):
            raise Deadline(f"stopped at its budget of {limit} s")

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
        self.data["phases"][name] |= result
        shown = {k: v for k, v in result.items() if k not in ("traceback", "output_tail")}
        print(f"[{name}] {result['status']} in {result['seconds']} s: {json.dumps(shown, default=str)[:2000]}",
              flush=True)
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


class GsplatBuild:
    """gsplat's JIT build in a child process, so that a failure or a hang cannot take this run with it."""

    CODE = ("import time; t = time.time(); import gsplat.cuda._backend as b; "
            "print('GSPLAT_OK' if b._C is not None else 'GSPLAT_NONE', round(time.time() - t, 1), "
            "getattr(b._C, '__name__', None))")  # gsplat.csrc: the wheel built ahead (build_gsplat.sh); else JIT

    def __init__(self, log: Path):
        env = {**os.environ, "MAX_JOBS": os.environ.get("MAX_JOBS", str(max(1, (os.cpu_count() or 4) - 2))),
               "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")}
        self.env, self.log, self.t0 = env, log, time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, env=env)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def built(self) -> bool:
        return self.done() and "GSPLAT_OK" in self.log.read_text()

    def wait(self) -> dict:
        """Waits until it ends (the phase's alarm stops the waiting, not the build)."""
        while not self.done():
            time.sleep(0.5)
        text = self.log.read_text()
        result = {"built": self.built(), "wall_s": round(time.monotonic() - self.t0, 1),
                  "max_jobs": self.env["MAX_JOBS"], "arch_list": self.env["TORCH_CUDA_ARCH_LIST"]}
        if result["built"]:
            seconds, module = text.split("GSPLAT_OK")[1].split()[:2]
            result["build_s"], result["prebuilt"] = float(seconds), module == "gsplat.csrc"
        else:
            result["error"] = text.strip()[-4000:]
        return result


def prepare() -> dict:
    import torch

    from esd_gs.commands.bench import save_random_sd21

    save_random_sd21(WEIGHTS, torch.float16, variant="fp16", device="cuda")
    files = sorted(str(p.relative_to(WEIGHTS)) for p in WEIGHTS.rglob("*.safetensors"))
    return {"folder": str(WEIGHTS), "weight_files": files,
            "gib": round(sum(p.stat().st_size for p in WEIGHTS.rglob("*")) / 2**30, 2)}


def parity(limit: float) -> dict:
    """pytest -m cuda, stopped by its own timeout a little before the phase's alarm, so that what it printed
    (each test's verdict and duration) reaches the report even when it runs out of time."""
    command = [sys.executable, "-m", "pytest", "-v", "--durations=0", "-m", "cuda", "-p", "no:cacheprovider",
               str(REPO / "tests" / "test_cuda.py")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=limit)
    except subprocess.TimeoutExpired as e:
        printed = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        raise RuntimeError(f"pytest stopped after {limit:.0f} s; it had printed:\n{printed[-2500:]}") from None
    lines = done.stdout.strip().splitlines()
    return {"exit_code": done.returncode, "summary": lines[-1] if lines else "",
            "output_tail": "\n".join(lines[-40:])}


def raster() -> dict:
    from esd_gs.commands.bench import RasterArgs, bench_raster

    return {"results": [bench_raster(RasterArgs(num_gaussians=n, resolution=512, backend="gsplat", repeats=10))
                        for n in (100_000, 1_000_000)]}


def step(dtype: str, backend: str, eager: bool = False, capture: bool = False, prior_capture: bool = False) -> dict:
    from esd_gs.commands.bench import StepArgs, bench_step

    return bench_step(StepArgs(full_size=True, model_path=str(WEIGHTS), dtype=dtype, resolution=512,
                               camera_map_pins=64, steps=10, warmup=3, backend=backend, eager=eager, capture=capture,
                               prior_capture=prior_capture))


def train_command(preset: str, backend: str, run_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "esd_gs.cli", "train", "--preset", preset, "--prompt", "a corgi", "--model-path",
            str(WEIGHTS), "--output-dir", str(run_dir.parent), "--run-name", run_dir.name, "--overwrite",
            "--render.backend", backend, "--log.no-progress", *flags]


def training_seconds(run_dir: Path) -> float | None:
    """From the first step's log line to the last one's (metrics.jsonl's it_s): the training alone, without
    the start (imports, loading weights) and the end (turntable, PLY)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rates = [json.loads(line)["it_s"] for line in path.read_text().splitlines()]
    return round(sum(1 / r for r in rates), 1) if rates else None


def cli_train(backend: str, out: Path) -> dict:
    """The user's command on the random full-size weights; what it printed and wrote."""
    run_dir = WEIGHTS.parent / "runs" / "cli"
    command = train_command("sd21-esd", backend, run_dir, "--steps", "100", "--variational.camera-map",
                            "--variational.camera-map-pins", "64", "--densify.refine-start-iter", "20",
                            "--densify.refine-every", "20", "--log.checkpoint-every", "50",
                            "--log.preview-every", "100", "--log.turntable-frames", "8")
    t0 = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    previews = sorted((run_dir / "previews").glob("*.png"))
    if previews:
        (out / "cli_preview.png").write_bytes(previews[-1].read_bytes())
    after = [m["it_s"] for m in metrics[20:]]
    return {"exit_code": done.returncode, "wall_s": round(wall, 1), "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-3000:], "steps_logged": len(metrics),
            "it_s_median_after_20": sorted(after)[len(after) // 2] if after else None,
            "gaussians": [(m["step"], m["n_gaussians"]) for m in metrics if m["step"] % 10 == 0],
            "refines": [{k: m[k] for k in m if k.startswith(("grad2d", "grown", "pruned", "step"))}
                        for m in metrics if "grad2d_q50" in m],
            "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")),
            "splats_ply_bytes": (run_dir / "splats.ply").stat().st_size if (run_dir / "splats.ply").exists() else 0,
            "outputs": sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []}


def preview(backend: str, out: Path, limit: float) -> dict:
    """`--preset sd21-preview` as a user runs it: its exit code, the training's seconds and the whole command's.
    Stopped a little before the phase's budget, it still reports how far it got (exit code None)."""
    run_dir = WEIGHTS.parent / "runs" / "preview"
    t0 = time.monotonic()
    try:
        done = subprocess.run(train_command("sd21-preview", backend, run_dir), capture_output=True, text=True,
                              cwd=REPO, timeout=limit)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        done = subprocess.CompletedProcess(e.cmd, None, "", err + f"\nstopped after {limit:.0f} s")
    wall = time.monotonic() - t0
    previews = sorted((run_dir / "previews").glob("*.png"))
    if previews:
        (out / "preview_preview.png").write_bytes(previews[-1].read_bytes())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    return {"exit_code": done.returncode, "training_s": training_seconds(run_dir), "command_wall_s": round(wall, 1),
            "steps": json.loads(lines[-1])["step"] if lines else 0, "stderr_tail": done.stderr[-2000:],
            "outputs": sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU machine: list the phases, run nothing on a GPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("phases (budget s): " + ", ".join(f"{k} {v}" for k, v in PHASES.items()) +
          f"; total {sum(PHASES.values())} s", flush=True)
    import torch  # before any phase: an alarm inside torch's first import leaves it half-registered

    report = Report(args.out)
    report.run("environment", environment)

    if args.dry_run or not torch.cuda.is_available():
        for name in list(PHASES)[1:]:
            report.skip(name, "dry run" if args.dry_run else "no CUDA device")
        return
    build = GsplatBuild(args.out / "gsplat_build.log")
    report.run("prepare", prepare)
    report.run("gsplat_build", build.wait)
    backend = lambda: "gsplat" if build.built() else "torch"  # noqa: E731 - the build may end later
    report.data["backend"] = {}  # the rasterizer each phase used
    deferred = []
    phases = {"parity": lambda: parity(min(PHASES["parity"], report.left()) - 3), "raster": raster,
              "step_bf16_eager": lambda: step("bfloat16", backend(), eager=True),
              "step_bf16": lambda: step("bfloat16", backend()),
              "step_bf16_captured": lambda: step("bfloat16", backend(), capture=True),
              "step_bf16_graphed": lambda: step("bfloat16", backend(), capture=True, prior_capture=True),
              "cli_train": lambda: cli_train(backend(), args.out), "preview": lambda: preview(backend(), args.out, min(PHASES["preview"], report.left()) - 3)}
    for name, fn in phases.items():
        if name in NEEDS_GSPLAT and not build.built():
            deferred.append(name)
            continue
        report.data["backend"][name] = backend()
        report.run(name, fn)
    for name in deferred:  # the build may have ended meanwhile
        if build.built():
            report.run(name, phases[name])
        else:
            report.skip(name, "gsplat not built" + ("" if build.done() else " yet (still compiling)"))
    if not build.done():
        build.proc.kill()


if __name__ == "__main__":
    main()
