"""The variational score's training step as one CUDA graph (`--variational.capture`).

On a GPU the step is launch-bound: the LoRA's training step (UNet forward, backward, fused AdamW) alone is about
7,500 operations, each a kernel launch whose host time is the cost (docs/benchmarks.md). Its shapes never change
(the latents of the step's renders, the text, the rows of `train_steps` copies), so it is captured once as a CUDA
graph and replayed: one launch. It starts at the renders' latents, so densification (the Gaussian count changes)
never touches it; a resume or a rollback (new optimiser state) does, and it is captured again.

Its randomness is the device's: timesteps, noise, and the camera dropout as a draw on the device with the eager
step's distribution, so it draws other numbers than the eager step does. Written without a GPU (2026-12-06): off by
default until the device check (`step_bf16_captured`, tests/test_cuda.py) has run it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def snapshot(variational) -> tuple[list[Tensor], dict[int, dict]]:
    """The trainable weights and their optimiser state, copied."""
    state = variational.optimizer.state
    return ([p.detach().clone() for p in variational.trainable],
            {id(p): {k: v.clone() for k, v in state[p].items() if torch.is_tensor(v)} for p in variational.trainable
             if p in state})


@torch.no_grad()
def restore(variational, saved: tuple[list[Tensor], dict[int, dict]]) -> None:
    """Back to a snapshot, in place (a graph holds these tensors' addresses); optimiser state the snapshot did
    not have (a first step creates it) goes back to zero, as a fresh optimiser's."""
    weights, state = saved
    for p, value in zip(variational.trainable, weights):
        p.copy_(value)
    for p in variational.trainable:
        for key, tensor in variational.optimizer.state.get(p, {}).items():
            if torch.is_tensor(tensor):
                before = state.get(id(p), {}).get(key)
                tensor.copy_(before) if before is not None else tensor.zero_()


class CapturedStep:
    """The variational score's denoising_step, its draws on the device, captured as a CUDA graph at its first call
    (after warm-up steps that are then undone) and replayed after: the inputs are copied into the graph's own
    tensors, the loss comes back as a copy."""

    WARMUP = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks

    def __init__(self, variational):
        self.variational, self.graph = variational, None

    def invalidate(self) -> None:
        """The optimiser's state was replaced (a resume, a rollback): capture again at the next step."""
        self.graph = None

    def __call__(self, latents: Tensor, c2w_flat: Tensor, repeats: int) -> Tensor:
        if self.graph is None:
            self._capture(latents, c2w_flat, repeats)
        self.latents.copy_(latents)
        self.c2w_flat.copy_(c2w_flat)
        self.graph.replay()
        return self.loss.clone()

    def _capture(self, latents: Tensor, c2w_flat: Tensor, repeats: int) -> None:
        v = self.variational
        self.latents, self.c2w_flat = latents.clone(), c2w_flat.clone()
        saved = snapshot(v)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                v.denoising_step(self.latents, self.c2w_flat, repeats, device_draws=True)
        torch.cuda.current_stream().wait_stream(side)
        restore(v, saved)  # the warm-up's steps never happened
        v.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = v.denoising_step(self.latents, self.c2w_flat, repeats, device_draws=True)
