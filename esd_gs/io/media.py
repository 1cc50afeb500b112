"""Images and videos (imageio), written atomically."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .atomic import atomic_path


def to_uint8(images: Tensor) -> np.ndarray:
    """[...,H,W,3] floats in [0,1] -> uint8 numpy; NaN becomes 0 so a bad render never crashes a save."""
    return (torch.nan_to_num(images.detach().float().cpu()).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def grid(images: Tensor, cols: int | None = None, upscale: int = 1) -> Tensor:
    """[N,H,W,3] -> one [rows*H, cols*W, 3] image."""
    if upscale > 1:
        images = images.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    n, h, w, c = images.shape
    cols = cols or n
    rows = -(-n // cols)
    pad = torch.ones(rows * cols - n, h, w, c, dtype=images.dtype, device=images.device)
    images = torch.cat([images, pad]).reshape(rows, cols, h, w, c)
    return images.permute(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def reads_back_frames(frames: int, shape: tuple[int, ...], **read) -> Callable[[Path], str | None]:
    """An atomic_path `verify` for images and videos: the file decodes (imageio; ffmpeg for MP4) into
    `frames` frames of `shape` [H,W,3]; else what is wrong."""
    def verify(tmp: Path) -> str | None:
        try:
            got = [frame.shape[:2] for frame in iio.imiter(tmp, **read)]
        except Exception as e:  # any decoder failure: the file is not what was written
            return f"it does not decode ({type(e).__name__})"
        if len(got) != frames or any(g != shape[:2] for g in got):
            return f"it decodes into {len(got)} of {frames} frames" if len(got) != frames else "its frames decode wrong"
        return None
    return verify


def write_encoded(path: str | os.PathLike, data: np.ndarray, extension: str, **kwargs) -> None:
    """Encodes in memory, then writes the bytes atomically: a failed write (a full disk) is then ours to
    report, not a file imageio's plugin still holds and fails to close again when collected. The file is
    decoded again before it replaces anything."""
    encoded = iio.imwrite("<bytes>", data, extension=extension, **kwargs)
    frames = len(data) if data.ndim == 4 else 1
    with atomic_path(path, verify=reads_back_frames(frames, data.shape[-3:], extension=extension)) as tmp:
        tmp.write_bytes(encoded)


def save_png(path: str | os.PathLike, image: Tensor) -> None:
    write_encoded(path, to_uint8(image), ".png")


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:  # not installed, or its binary missing for this platform
        return False


def save_video(path: str | os.PathLike, frames: Tensor, fps: int = 15) -> bool:
    """GIF via Pillow; MP4 via imageio-ffmpeg when its binary is available (False: skipped, with a warning).
    A failed write (a full disk) is a UserError naming the file; the file that was there stays."""
    data = to_uint8(frames)
    if str(path).lower().endswith(".gif"):
        write_encoded(path, data, ".gif", duration=int(1000 / fps), loop=0)
        return True
    if not ffmpeg_available():
        warnings.warn(f"skipped {path}: no usable ffmpeg (pip install imageio-ffmpeg)")
        return False
    # ffmpeg says nothing (its trailer error on a full disk said "wrote" after it); the file is decoded again,
    # frame count and size, before it replaces the one that was there
    with atomic_path(path, verify=reads_back_frames(len(data), data.shape[-3:], plugin="FFMPEG")) as tmp:
        try:
            iio.imwrite(tmp, data, extension=os.path.splitext(str(path))[1], fps=fps, codec="libx264",
                        macro_block_size=1, plugin="FFMPEG", ffmpeg_log_level="quiet")
        except (OSError, RuntimeError) as e:  # ffmpeg's pipe breaks when it cannot write
            raise UserError(f"cannot write {path}: ffmpeg failed ({type(e).__name__}; is the disk full?)") from None
    return True
