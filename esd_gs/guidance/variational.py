"""The variational score of VSD/ESD: what it is to the objective, and the UNet that learns it online.

A variational estimator gives two noise predictions for the current object's renders: camera-free
(the score of the distribution of renders over all training cameras) and camera-conditioned. ESD mixes
them (guidance/distill.py). Implementations: `UNetVariational` here (Stable Diffusion's LoRA, and the
synthetic world's small UNet), the synthetic world's exact estimator, the 2-D Gaussian example's
analytic one.

UNetVariational: the camera enters as diffusers' class embedding: flattened 4x4 camera-to-world (16
numbers) -> MLP -> added to the time embedding. The camera-free branch is an all-zero camera through
the same MLP (learned thanks to camera dropout). Rows that must get no camera term at all (the
prior's rows when the base UNet is shared) carry a mask of 0: MLP(0) is not 0, so zeroing the input
would not do. `lora_rank` > 0 trains a peft LoRA adapter on a (shared or separate) pretrained UNet;
`lora_rank` = 0 trains the whole UNet (the synthetic world's small network).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.cameras import Cameras, fibonacci_lattice
from .captured import CapturedStep
from .prior import denoising_target, eps_from_prediction

ADAPTER = "esd_lora"

Snapshot = Callable[[Cameras], Tensor]
"""Renders the current object at the given cameras and encodes them (no gradient): latents [K,C,h,w]."""


def mix_branches(lam: float, eps_free: Tensor | None, eps_cam: Tensor | None) -> Tensor:
    """ESD's eps_q = lam eps(no camera) + (1 - lam) eps(camera); a branch lam gives no weight may be None."""
    if lam == 0.0:
        return eps_cam
    if lam == 1.0:
        return eps_free
    return lam * eps_free + (1 - lam) * eps_cam


def branches_needed(lam: float) -> tuple[bool, bool]:
    """(camera-free, camera-conditioned): which branches lam weighs."""
    return lam > 0.0, lam < 1.0


def split_branches(eps: tuple[Tensor, ...] | list[Tensor], lam: float) -> tuple[Tensor | None, Tensor | None]:
    """(camera-free, camera) from the predictions of the branches lam weighs, in branch_labels' order."""
    free, camera = branches_needed(lam)
    return (eps[0] if free else None), (eps[-1] if camera else None)


class Variational(Protocol):
    def eps_branches(self, x_t: Tensor, t: Tensor, c2w_flat: Tensor, noise: Tensor,
                     lam: float) -> tuple[Tensor | None, Tensor | None]:
        """(camera-free eps, camera-conditioned eps) for x_t at t; c2w_flat [B,16] are the render cameras and
        noise the noise injected into x_t. A branch that `lam` gives no weight may be None."""

    def update(self, latents: Tensor, c2w_flat: Tensor, snapshot: Snapshot) -> dict[str, float]:
        """Learns from this step's renders (detached latents [B,C,h,w] and their cameras); returns logs."""

    def trainable_state(self) -> dict:
        """What training changed (for checkpoints)."""

    def load_trainable_state(self, state: dict) -> None: ...


@dataclass
class VariationalConfig:
    lora_rank: int = 16
    """LoRA rank on the SD UNet (0 = train the whole UNet)."""
    base_model: str = "shared"
    """'shared': adapter on the prior's own UNet (far less memory); else a folder, hub id or alias to load
    (sd21: Stable Diffusion 2.1, v prediction, threestudio's ProlificDreamer choice)."""
    lr: float = 1e-4
    camera_dropout: float = 0.1
    """Probability that a whole training batch gets the all-zero camera (teaches the camera-free score)."""
    train_steps: int = 1
    """Timesteps the variational network trains on per distillation step (fresh t and noise each), as one
    batch: one forward and backward of B x this many rows, one optimiser step (threestudio's
    lora_n_timestamp_samples)."""
    camera_lr_scale: float = 1.0
    """Learning rate of the camera embedding relative to `lr`."""
    camera_frequencies: int = 0
    """Fourier features of the camera (sin/cos of 2^k pi c2w, k < this) besides the raw 16 numbers."""
    camera_map: bool = False
    """Also give the camera to the UNet as a spatial input: a learned feature map of the camera (an MLP's
    low-resolution grid, upsampled) added to conv_in's output, zero at the start. A class embedding only
    shifts whole channels, which cannot paint a view; this can."""
    camera_map_grid: int = 0
    """Side of the camera map's grid before upsampling (0: a quarter of the UNet's sample size)."""
    camera_map_pins: int = 0
    """0: the camera map is an MLP of the camera. N > 0: a blend of N learned grids pinned to directions
    spread evenly over the sphere, weighted by a softmax of `camera_map_sharpness` x the cosine between the
    camera's direction from the origin and each pin (cameras must look at the origin, as both worlds'
    orbits do). A view's step moves mostly the grids near it, so the map keeps up with a changing object."""
    capture: bool = False
    """CUDA only: the training step (forward, backward, AdamW) as one CUDA graph, captured at the first step and
    again after a resume or a rollback (guidance/captured.py); its draws are the device's. Not yet measured on a
    GPU: off by default until the device check has run it."""
    camera_map_sharpness: float = 20.0
    """Of the pinned grids' softmax: at 20 a pin 18 deg from the camera weighs 1/e of one on it."""


class CameraEmbedding(nn.Module):
    """class_labels [B,17] = (c2w flattened [16], mask [1]) -> mask * MLP(features(c2w)).

    A row's mask says whether it is a variational row (1) or the plain prior's (0): mask 0 gives no camera term
    here, in CameraConvIn, nor (camera_rows) any LoRA."""

    def __init__(self, out_dim: int, frequencies: int = 0):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32),
                             persistent=False)
        self.in_dim = 16 * (1 + 2 * frequencies)
        self.mlp = nn.Sequential(nn.Linear(self.in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.call_labels: Tensor | None = None
        """The class labels of the UNet call under way (CameraConvIn reads them: diffusers computes the class
        embedding before conv_in)."""

    def features(self, class_labels: Tensor) -> tuple[Tensor, Tensor]:
        """(camera features [B,in_dim], mask [B,1]) in the MLP's dtype."""
        dtype = self.mlp[0].weight.dtype
        cam, mask = class_labels[:, :16].float(), class_labels[:, 16:]
        angles = (cam[:, :, None] * self.freqs).flatten(1)
        return torch.cat([cam, angles.sin(), angles.cos()], dim=-1).to(dtype), mask.to(dtype)

    def forward(self, class_labels: Tensor) -> Tensor:
        self.call_labels = class_labels
        features, mask = self.features(class_labels)
        return self.mlp(features) * mask

    def labels(self, c2w_flat: Tensor | None, batch: int, prior_rows: bool = False) -> Tensor:
        """c2w_flat None means the all-zero camera; prior_rows gives mask 0 (no camera term at all)."""
        device = self.mlp[0].weight.device
        cam = torch.zeros(batch, 16, device=device) if c2w_flat is None else c2w_flat.to(device, torch.float32)
        mask = torch.full((batch, 1), 0.0 if prior_rows else 1.0, device=device)
        return torch.cat([cam, mask], dim=-1)


def fibonacci_sphere(n: int) -> Tensor:
    """n unit vectors spread evenly over the sphere [n,3]."""
    z, phi = fibonacci_lattice(n)
    r = (1 - z**2).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)


class CameraConvIn(nn.Module):
    """conv_in(x) + mask * upsample(camera map [C, g, g]): the camera as a spatial input. The map is an MLP
    of the camera's features (`pins` 0) or a blend of grids pinned to directions (`pins` > 0; the all-zero
    camera of the camera-free branch gets none). Both start at zero, so the network starts as its base."""

    # Adam moves a parameter by about lr a step: the MLP's output moves by about lr x its hidden width, a
    # pinned grid by lr x this gain. 16 kept the small-t camera gap above the MLP's; 1 left it at half
    # (docs/results.md section 5, seventh round).
    PIN_GAIN = 16.0

    def __init__(self, conv_in: nn.Conv2d, embedding: CameraEmbedding, grid: int, pins: int = 0,
                 sharpness: float = 20.0, hidden: int = 256):
        super().__init__()
        self.conv_in, self.embedding, self.grid = conv_in, [embedding], grid  # a list: not a submodule twice
        channels = conv_in.out_channels
        if pins:
            self.register_buffer("pins", fibonacci_sphere(pins), persistent=False)
            self.pinned = nn.Parameter(torch.zeros(pins, channels, grid, grid))
            self.sharpness = sharpness
        else:
            self.mlp = nn.Sequential(nn.Linear(embedding.in_dim, hidden), nn.SiLU(),
                                     nn.Linear(hidden, channels * grid * grid))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def pin_weights(self, labels: Tensor) -> Tensor:
        """[B,pins]: softmax over the pins of sharpness x cos(camera direction, pin); 0 for the all-zero camera."""
        position = labels[:, :16].float().view(-1, 4, 4)[:, :3, 3]
        weights = torch.softmax(self.sharpness * F.normalize(position, dim=-1) @ self.pins.T, dim=-1)
        return weights * (position.abs().sum(-1, keepdim=True) > 0)

    def camera_grid(self, labels: Tensor) -> Tensor:
        """[B,C,g,g] before the mask."""
        if hasattr(self, "pinned"):
            return self.PIN_GAIN * torch.einsum("bp,pchw->bchw", self.pin_weights(labels), self.pinned)
        features, _ = self.embedding[0].features(labels)
        return self.mlp(features).view(len(labels), -1, self.grid, self.grid)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_in(x)
        labels = self.embedding[0].call_labels
        if labels is None:
            return out
        grid = self.camera_grid(labels) * labels[:, 16:, None, None].to(out.dtype)
        return out + F.interpolate(grid, size=out.shape[-2:], mode="bilinear", align_corners=False).to(out.dtype)


@contextlib.contextmanager
def camera_rows(unet, labels: Tensor):
    """Within: the UNet runs its LoRA (if it carries one) only on the rows whose camera mask in `labels` [R,17] is
    1; rows of mask 0 are the plain prior's, bit for bit (no camera term, no LoRA): one mechanism for both."""
    gate = getattr(unet, "lora_row_gate", None)
    if gate is None:
        yield
        return
    gate.value = labels[:, 16]
    try:
        yield
    finally:
        gate.value = None


def unet_forward(unet, x: Tensor, t: Tensor, text: Tensor, labels: Tensor) -> Tensor:
    """The UNet's prediction for rows x at t with their text and camera labels (the LoRA gated per row)."""
    with camera_rows(unet, labels):
        return unet(x, t, encoder_hidden_states=text, class_labels=labels).sample


class RowGate(nn.Module):
    """A LoRA layer's dropout, then its input rows times a 0/1 gate while one is set: rows gated 0 get
    lora_B(lora_A(0)) = 0 (no biases), so their output is the base layer's, bit for bit."""

    class Shared:
        value: Tensor | None = None

    def __init__(self, dropout: nn.Module, shared: "RowGate.Shared"):
        super().__init__()
        self.dropout, self.shared = dropout, shared

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.dropout(x), self.shared.value
        return x if gate is None else x * gate.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def dropout_labels(emb: CameraEmbedding, c2w_flat: Tensor, batch: int, repeats: int, p: float,
                   on_device: bool) -> Tensor:
    """Class labels of `repeats` copies of a batch [repeats*batch,17], each copy's camera zeroed (the camera-free
    branch's input) with probability p: a host draw a copy, or one draw on the device for all of them (the same
    distribution, no wait for the device)."""
    if on_device:
        keep = torch.rand(repeats, 1, device=c2w_flat.device) >= p
        return emb.labels(c2w_flat * keep.repeat_interleave(batch, 0), batch * repeats)
    return torch.cat([emb.labels(None if torch.rand(()) < p else c2w_flat[k * batch:(k + 1) * batch], batch)
                      for k in range(repeats)])


class UNetVariational(nn.Module):
    def __init__(self, unet, text_embedding: Tensor, scheduler, cfg: VariationalConfig):
        """unet: the base network (the prior's own when shared); scheduler: the one `unet` was trained with
        (its prediction type decides whether the LoRA learns eps or v)."""
        super().__init__()
        self.unet, self.scheduler, self.cfg = unet, scheduler, cfg
        # the base weights' dtype: `unet.dtype` is that of its first parameter, which the fp32 camera map becomes
        self.dtype = unet.time_embedding.linear_1.weight.dtype
        self.register_buffer("text", text_embedding.detach().clone(), persistent=False)
        if cfg.lora_rank > 0:
            from peft import LoraConfig

            unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                        target_modules=["to_k", "to_q", "to_v", "to_out.0"]), adapter_name=ADAPTER)
            trainable = [p for n, p in unet.named_parameters() if "lora_" in n]
            for p in trainable:  # LoRA weights train in fp32 even on a half-precision base
                p.data = p.data.float()
            self._gate_lora_layers(unet)
        else:
            unet.requires_grad_(True)
            trainable = list(unet.parameters())
        time_dim = unet.time_embedding.linear_2.out_features
        unet.class_embedding = CameraEmbedding(time_dim, cfg.camera_frequencies).to(unet.device)
        camera = list(unet.class_embedding.parameters())
        if cfg.camera_map:
            grid = cfg.camera_map_grid or max(4, unet.config.sample_size // 4)
            unet.conv_in = CameraConvIn(unet.conv_in, unet.class_embedding, grid, cfg.camera_map_pins,
                                        cfg.camera_map_sharpness).to(unet.device)
            camera += [p for n, p in unet.conv_in.named_parameters() if not n.startswith("conv_in.")]
        self.trainable = trainable + camera
        # fused: one kernel for all parameters (~10M with a 32x32 MLP camera map, 8M of them the map's); the loop
        # over tensors took a quarter of a demo step on the CPU (docs/benchmarks.md)
        self.optimizer = torch.optim.AdamW([{"params": trainable}, {"params": camera,
                                                                   "lr": cfg.lr * cfg.camera_lr_scale}],
                                           lr=cfg.lr, betas=(0.9, 0.99), fused=True, capturable=cfg.capture)
        self.captured = CapturedStep(self) if cfg.capture else None

    def _gate_lora_layers(self, unet) -> None:
        """Lets one UNet call run the LoRA on some rows and only the base weights on others (camera_rows): each
        LoRA layer's dropout slot (an identity here) gets a RowGate. peft's own mixed-batch inference
        (`adapter_names`) indexes every layer's rows with a Python list, which on CUDA is an upload and a wait
        per layer, 128 of them a call on SD 2.1; the gate is one multiplication."""
        unet.lora_row_gate = RowGate.Shared()
        for module in unet.modules():
            if hasattr(module, "lora_dropout") and ADAPTER in module.lora_dropout:
                module.lora_dropout[ADAPTER] = RowGate(module.lora_dropout[ADAPTER], unet.lora_row_gate)

    def _eps(self, x_t: Tensor, t: Tensor, class_labels: Tensor) -> Tensor:
        text = self.text.expand(len(x_t), -1, -1).to(self.dtype)
        pred = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=text, class_labels=class_labels).sample
        return eps_from_prediction(pred, x_t, t, self.scheduler)

    @torch.no_grad()
    def camera_eps(self, x_t: Tensor, t: Tensor, c2w_flat: Tensor | None) -> Tensor:
        """eps_lora(x_t, t, camera); c2w_flat None = the camera-free branch."""
        return self._eps(x_t, t, self.unet.class_embedding.labels(c2w_flat, len(x_t)))

    @torch.no_grad()
    def eps_branches(self, x_t: Tensor, t: Tensor, c2w_flat: Tensor, noise: Tensor,
                     lam: float) -> tuple[Tensor | None, Tensor | None]:
        """Only the branches lam weighs, in one batched UNet call."""
        labels = self.branch_labels(c2w_flat, len(x_t), lam)
        eps = self._eps(x_t.repeat(len(labels), 1, 1, 1), t.repeat(len(labels)), torch.cat(labels))
        return split_branches(eps.chunk(len(labels)), lam)

    def branch_labels(self, c2w_flat: Tensor, batch: int, lam: float) -> list[Tensor]:
        """Class labels of the branches lam weighs, camera-free first: [batch,17] each."""
        emb = self.unet.class_embedding
        return [emb.labels(cam, batch) for cam, needed in zip((None, c2w_flat), branches_needed(lam)) if needed]

    def update(self, latents: Tensor, c2w_flat: Tensor, snapshot: Snapshot) -> dict[str, Tensor]:
        """One optimiser step of the denoising loss on the detached latents at `train_steps` timesteps each;
        returns the loss (a 0-d tensor, not read here: reading it would wait for the device)."""
        latents = latents.detach().float()
        if self.captured:
            return {"variational_loss": self.captured(latents, c2w_flat, self.cfg.train_steps)}
        return {"variational_loss": self.denoising_step(latents, c2w_flat, self.cfg.train_steps)}

    def denoising_step(self, latents: Tensor, c2w_flat: Tensor, repeats: int = 1, device_draws: bool = False) -> Tensor:
        """The standard denoising loss at uniform t on `repeats` copies of the batch (fresh t and noise each,
        one batched forward), each copy's camera dropped with some probability; one optimiser step.
        device_draws: every draw on the latents' device, none on the host (a CUDA graph's step: captured.py)."""
        B = len(latents)
        if repeats > 1:  # (a copy is contiguous: randn_like draws then land elsewhere than on a strided view)
            latents, c2w_flat = latents.repeat(repeats, 1, 1, 1), c2w_flat.repeat(repeats, 1)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (B * repeats,), device=latents.device)
        noise = torch.randn_like(latents)
        x_t = self.scheduler.add_noise(latents, noise, t)
        labels = dropout_labels(self.unet.class_embedding, c2w_flat, B, repeats, self.cfg.camera_dropout,
                                device_draws)
        text = self.text.expand(B * repeats, -1, -1).to(self.dtype)
        pred = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=text, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), denoising_target(latents, noise, t, self.scheduler).float())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def trainable_state(self) -> dict:
        """Only what training changes: LoRA (or whole-UNet) weights, camera MLP, optimiser."""
        names = {id(p): n for n, p in self.unet.named_parameters()}
        return {"params": {names[id(p)]: p.detach().clone() for p in self.trainable},
                "optimizer": self.optimizer.state_dict()}

    def load_trainable_state(self, state: dict) -> None:
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.captured:  # new optimiser state: the graph held the old one's tensors
            self.captured.invalidate()
