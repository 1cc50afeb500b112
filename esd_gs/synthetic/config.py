"""Settings of the synthetic world: its photo set, exact prior and variational estimators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, CameraConfig


@dataclass
class SyntheticConfig:
    resolution: int = 32
    num_images: int = 1024
    front_share: float = 0.25
    """Fraction of photos within 45 deg of the front: 0.25 is uniform in azimuth (the fair setting, where
    the true head is the optimum of ESD's objective); more is a front-biased photo collection."""
    elevation_deg: tuple[float, float] = (0.0, 30.0)
    """Photo elevations, uniform in this range; the training cameras use the same range."""
    radius: float = ORBIT_RADIUS
    fovy_deg: float = ORBIT_FOVY_DEG
    view_kappa: float = 0.12
    """Strength of the smooth view reweighting behind 'front/side/back view' prompts."""
    variational: Literal["learned", "exact"] = "learned"
    """'learned': small UNet2DConditionModel with the camera embedding; 'exact': the exact estimator
    (camera-free: ideal denoiser of fresh renders; camera: see camera_branch)."""
    bank_size: int = 32
    """Exact estimator: K renders of the current object at cameras drawn from the training orbit."""
    bank_refresh_every: int = 1
    """Exact estimator: re-render the K views every this many steps."""
    camera_branch: Literal["dirac", "kernel"] = "dirac"
    """Exact estimator's camera-conditioned score: 'dirac' = the render itself (eps = the injected noise),
    'kernel' = the ideal denoiser of the bank weighted by a Gaussian kernel on the camera angle."""
    camera_kernel_deg: float = 30.0
    """Width (std) of that camera kernel."""
    unet_channels: int = 32
    unet_film: bool = False
    """Learned network: the time + camera embedding scales and shifts each block's features (FiLM,
    diffusers' resnet_time_scale_shift="scale_shift") instead of only shifting them."""
    unet_prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    """Learned network: what it is trained to predict. Both give the same eps at the optimum; v weighs the
    denoising loss at timestep t by 1/alphabar(t) relative to eps (about 14x at t = 800), where the
    camera-conditioned and camera-free scores differ most."""
    data_seed: int = 1234

    def camera_config(self) -> CameraConfig:
        """The training orbit: the photos' (any azimuth, the photos' elevations, radius and field of view)."""
        return CameraConfig(radius=(self.radius, self.radius), elevation_deg=self.elevation_deg,
                            fovy_deg=(self.fovy_deg, self.fovy_deg))
