"""metrics.jsonl: a line per step. A step's logged scalars stay on the device; every few steps they are read
in one transfer (one wait for the GPU) and written with the mean rate since the last write."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..io.atomic import write_text


class MetricsLog:
    def __init__(self, path: Path, step: int):
        """Keeps the lines of steps up to `step` (a killed run may have logged past its last checkpoint) and
        appends after them, unbuffered: a failed write (a full disk) fails at once, naming the file, and
        leaves nothing for close() to fail on again."""
        kept = []
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():  # damaged bytes end the kept lines
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    break
        write_text(path, "".join(line + "\n" for line in kept))
        self.path, self.file = path, open(path, "ab", buffering=0)
        self.pending: list[dict] = []
        self.since = time.perf_counter()

    def add(self, logs: dict) -> None:
        self.pending.append(logs)

    def flush(self, bar) -> None:
        """Writes the pending steps' lines (it_s: their mean rate) and shows the last one's loss on `bar`."""
        now, pending = time.perf_counter(), self.pending
        if not pending:
            self.since = now
            return
        tensors = [(i, k, v) for i, logs in enumerate(pending) for k, v in logs.items() if torch.is_tensor(v)]
        if tensors:
            device = next((v.device for _, _, v in tensors if v.device.type != "cpu"), torch.device("cpu"))
            values = torch.stack([v.detach().float().reshape(()).to(device) for _, _, v in tensors]).tolist()
            for (i, k, _), value in zip(tensors, values):
                pending[i][k] = value
        rate = len(pending) / max(now - self.since, 1e-9)
        try:
            self.file.write("".join(json.dumps({**logs, "it_s": rate}) + "\n" for logs in pending).encode())
        except OSError as e:  # a full disk: say which file (ENOSPC names none); the checkpoints are intact
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        bar.set_postfix(loss=f"{pending[-1]['loss']:.4g}", gaussians=pending[-1]["n_gaussians"], refresh=False)
        self.pending, self.since = [], now

    def close(self) -> None:
        self.file.close()
