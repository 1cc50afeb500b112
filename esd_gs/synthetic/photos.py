"""The synthetic world's data: photos of the head from (optionally front-biased) azimuths, cached on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor

from ..core.cameras import Cameras, make_cameras
from ..errors import UserError
from ..io.atomic import atomic_path
from ..render import render_frames
from .config import SyntheticConfig
from .head import head_splats

PHOTOS_VERSION = 1  # bump when head_splats or the renderer changes what photos look like


def sample_front_biased_azimuths(n: int, front_share: float, g: torch.Generator) -> Tensor:
    """Mixture: uniform in [-45, 45] with prob q, uniform on the circle otherwise; q + (1-q)/4 = front_share."""
    q = max(0.0, (front_share - 0.25) / 0.75)
    front = torch.rand(n, generator=g) < q
    return torch.where(front, -45 + 90 * torch.rand(n, generator=g), -180 + 360 * torch.rand(n, generator=g))


def photo_angles(cfg: SyntheticConfig) -> tuple[Tensor, Tensor]:
    """Azimuths and elevations (deg) of the photo set: a pure function of the config's data settings."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    azimuth = sample_front_biased_azimuths(cfg.num_images, cfg.front_share, g)
    lo, hi = cfg.elevation_deg
    return azimuth, lo + (hi - lo) * torch.rand(cfg.num_images, generator=g)


def photo_cameras(azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig) -> Cameras:
    return make_cameras(azimuth_deg, elevation_deg, cfg.radius, cfg.fovy_deg, cfg.resolution)


def render_photos(splats, azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig,
                  background: float = 1.0, chunk: int = 64) -> Tensor:
    """Renders [N,H,W,3] in [0,1] on a plain background, as the photo set is taken."""
    cams = photo_cameras(azimuth_deg, elevation_deg, cfg)
    return render_frames(splats, cams, (background,) * 3, backend="torch", chunk=chunk, depth=False)[0].clamp(0, 1)


def photo_cache_path(azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig) -> Path:
    """Where cached_photos keeps this photo set: $ESD_GS_CACHE (default ~/.cache/esd-gs)/photos-KEY.pt."""
    key = hashlib.sha256(repr((PHOTOS_VERSION, azimuth_deg.tolist(), elevation_deg.tolist(), cfg.resolution,
                               cfg.radius, cfg.fovy_deg)).encode()).hexdigest()[:16]
    return Path(os.environ.get("ESD_GS_CACHE", Path.home() / ".cache" / "esd-gs")) / f"photos-{key}.pt"


def cached_photos(azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig) -> Tensor:
    """render_photos of the head, cached on disk (photo_cache_path): rendering ~1000 views costs seconds to
    tens of seconds on a CPU. Processes that meet a cold cache at once (a batch's workers) render it once: the
    first renders under a file lock, the others wait for it and read its file."""
    path = photo_cache_path(azimuth_deg, elevation_deg, cfg)
    photos = _read_cache(path)
    if photos is not None:
        return photos
    with _render_lock(path):
        photos = _read_cache(path)  # rendered by whoever held the lock
        if photos is not None:
            return photos
        photos = render_photos(head_splats(), azimuth_deg, elevation_deg, cfg)
        try:
            with atomic_path(path) as tmp:
                torch.save(photos, tmp)
        except (RuntimeError, UserError) as e:  # a read-only or full cache only costs time (atomic_path turns
            # file-system errors into UserError; torch.save reports a full disk as RuntimeError)
            warnings.warn(f"could not cache the photo set in {path.parent} "
                          f"({str(e).strip().splitlines()[-1][:120]}); it is rendered again next time")
    return photos


def _read_cache(path: Path) -> Tensor | None:
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            pass  # unreadable cache: render again
    return None


@contextlib.contextmanager
def _render_lock(path: Path):
    """An exclusive lock on PATH.lock while the photos are rendered; none where the cache cannot hold a lock
    file (read-only, full): then every process renders for itself, as before."""
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
