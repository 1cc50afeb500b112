"""What every world supplies (esd_gs/worlds/__init__.py says what a world is)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.objective import Objective

if TYPE_CHECKING:
    from ..config import TrainConfig


class PriorWorld(ABC):
    """Where the prior comes from (`--world`: real Stable Diffusion weights, or the synthetic world's exact
    prior) and what comes with it: the objective built on it, the orbit previews are shot from, the end-of-run
    evaluation."""

    def __init__(self, cfg: "TrainConfig", device: torch.device):
        self.cfg, self.device = cfg, device

    @abstractmethod
    def objective(self) -> Objective:
        """Loads the prior and builds the objective (reads every input; writes nothing)."""

    @abstractmethod
    def orbit(self) -> tuple[float, float]:
        """Radius and vertical field of view (deg) for previews and turntables."""

    def evaluate(self, splats, run_dir: Path) -> dict:
        """End-of-run measurements written into run_dir; returns their summary (none by default)."""
        return {}
