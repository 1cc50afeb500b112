"""What the training loop asks of an objective, and the photometric one.

One training step reads, in order (run/trainer.py):
    views = objective.views(step, generator)          which cameras, on which backgrounds
    out   = render(splats, views.cameras, views.backgrounds)
    step_loss = objective.loss(out.rgb, views, step)  the loss on the Gaussians (+ detached latents)
    ... backward, Adam, densify ...
    objective.update(splats, step_loss, views)        the objective's own learning (variational score)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import Tensor

from .cameras import Cameras
from .timing import SectionTimer

Background = Literal["random", "white", "black"]


@dataclass
class Views:
    cameras: Cameras
    backgrounds: Tensor  # [B,3]
    index: Tensor | None = None  # photometric: which target photos these cameras took


@dataclass
class StepLoss:
    loss: Tensor
    logs: dict[str, float | Tensor] = field(default_factory=dict)
    """Scalars to log; 0-d tensors stay on the device until the trainer reads a batch of steps at once."""
    latents: Tensor | None = None  # detached encodings of the renders, for the objective's own update


class Objective(Protocol):
    timer: SectionTimer

    def views(self, step: int, generator: torch.Generator) -> Views: ...

    def loss(self, rgb: Tensor, views: Views, step: int) -> StepLoss: ...

    def update(self, splats, step_loss: StepLoss, views: Views) -> dict[str, float]:
        """After the Gaussians' step: anything the objective learns itself; returns logs."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def sample_backgrounds(mode: Background, n: int, generator: torch.Generator) -> Tensor:
    if mode == "random":
        return torch.rand(n, 3, generator=generator)
    return torch.full((n, 3), 1.0 if mode == "white" else 0.0)


class PhotometricObjective:
    """Fits fixed target photos (cameras + images) with an L1 loss: multi-view reconstruction."""

    def __init__(self, cameras: Cameras, targets: Tensor, background: Background, batch_size: int):
        self.cameras, self.targets, self.background, self.batch_size = cameras, targets, background, batch_size
        self.timer = SectionTimer()

    def views(self, step: int, generator: torch.Generator) -> Views:
        idx = torch.randperm(len(self.cameras), generator=generator)[: self.batch_size]
        return Views(self.cameras[idx], sample_backgrounds(self.background, len(idx), generator), idx)

    def loss(self, rgb: Tensor, views: Views, step: int) -> StepLoss:
        return StepLoss((rgb - self.targets[views.index].to(rgb.device)).abs().mean())

    def update(self, splats, step_loss: StepLoss, views: Views) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
