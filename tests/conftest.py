"""Shared test helpers: the CLI (in-process and as a console script), one-line error checks, small configs."""

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, env=None, timeout=900) -> CliResult:
    """Runs the installed console script in a subprocess, as users do."""
    exe = Path(sys.executable).with_name("esd-gs")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, **(env or {})}, timeout=timeout)
    return CliResult(r.returncode, r.stdout, r.stderr)


def cli(*args) -> CliResult:
    """Runs `esd-gs ARGS` in this process (fast: no interpreter start, imports already loaded)."""
    from esd_gs.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


def load_script(relative_path: str, name: str):
    """A script of the repository (tools/, benchmarks/) imported as the module `name`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clean_error(r: CliResult, fragment: str, out_dir: Path | None = None) -> None:
    """Exit code 2, exactly one line on stderr containing `fragment`, no traceback, nothing written."""
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir())


def tiny_synthetic(tmp_path, **overrides):
    """The demo preset cut down to seconds: 20 steps, 300 Gaussians, densifying at 5, 10, 15, 2 views a step
    and a variational UNet of 8 base channels (the demo's 4 views and 32 channels cost ~0.2 s a step here)."""
    from esd_gs.config import load_preset

    cfg = load_preset("demo")
    cfg.output_dir = tmp_path
    cfg.steps = 20
    cfg.log.progress = False
    cfg.log.preview_every = 0
    cfg.log.checkpoint_every = 10
    cfg.log.turntable_frames = 4
    cfg.log.turntable_resolution = 32
    cfg.gaussians.num_points = 300
    cfg.densify.refine_start_iter = 5
    cfg.densify.refine_every = 5
    cfg.densify.refine_stop_iter = 18
    cfg.synthetic.unet_channels = 8
    cfg.render.batch_size = 2
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline saved in the diffusers folder layout users download."""
    from tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def full_disk(tmp_path):
    """A 32 MiB tmpfs (root can mount one here and in CI) at .path, filled by .fill(free_bytes) to leave that
    much: writers meet a real ENOSPC at their real write calls. Skipped where mounting is not allowed."""
    import shutil
    import subprocess
    from types import SimpleNamespace

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def fill(free_bytes: int = 0) -> None:
        usage = shutil.disk_usage(disk)
        with open(disk / "filler", "ab") as f:
            f.write(b"\0" * max(0, usage.free - free_bytes))

    try:
        yield SimpleNamespace(path=disk, fill=fill)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
