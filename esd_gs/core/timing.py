"""Per-section wall-clock timing for `esd-gs bench step` (off, and nearly free, during training)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class SectionTimer:
    """`with timer("render"): ...` adds the section's milliseconds to `timer.ms["render"]` when enabled.
    CUDA work is asynchronous, so an enabled timer synchronises the device at both ends of a section."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.ms: dict[str, float] = defaultdict(float)
        self.section: str | None = None
        """The innermost section running now (esd-gs bench step --count-ops files operations under it)."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        outer, self.section = self.section, name
        try:
            with self._timed(name):
                yield
        finally:
            self.section = outer

    @contextlib.contextmanager
    def _timed(self, name: str):
        if not self.enabled:
            yield
            return
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync()
            self.ms[name] += 1000.0 * (time.perf_counter() - t0)

    def reset(self) -> None:
        self.ms.clear()
