"""The fused UNet call (guidance/fused.py) replayed from CUDA graphs (`--prior.capture`).

The one call for the prior's rows and ESD's branches is a no-grad UNet forward of ~3,400 operations, each a kernel
launch whose host time is what a GPU step costs (docs/benchmarks.md). Its shapes are fixed for a run but for the
row count, which lam's stage sets (one branch at lam 0 or 1, two between), so it is captured once per input shape
and replayed. The weights are read where they lie: the LoRA's in-place updates (eager or captured) and a resume's
copies reach every replay, so nothing has to be captured again. Written without a GPU (2026-12-06): off by
default until the device check (`step_bf16_graphed`, tests/test_cuda.py) has run it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .variational import unet_forward


class GraphedForward:
    """unet_forward as a CUDA graph per input shape, captured at its first call with that shape (after warm-up
    calls on a side stream, as torch.cuda.graphs asks); the inputs are copied into the graph's own tensors and
    the output comes back as a copy."""

    WARMUP = 3

    def __init__(self, unet):
        self.unet, self.graphs = unet, {}

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, text: Tensor, labels: Tensor) -> Tensor:
        inputs = (x, t, text, labels)
        key = tuple((a.shape, a.dtype) for a in inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        static, out, graph = self.graphs[key]
        for buffer, value in zip(static, inputs):
            buffer.copy_(value)
        graph.replay()
        return out.clone()

    def _capture(self, inputs: tuple[Tensor, ...]) -> tuple[list[Tensor], Tensor, torch.cuda.CUDAGraph]:
        static = [a.clone() for a in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                unet_forward(self.unet, *static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = unet_forward(self.unet, *static)
        return static, out, graph
