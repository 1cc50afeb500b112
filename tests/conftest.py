import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def repo() -> Path:
    return REPO


def run_cli(*args, cwd=None, env=None, timeout=900):
    """Runs the installed console script in a subprocess, as users do."""
    import subprocess

    exe = Path(sys.executable).with_name("esd-gs")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)
