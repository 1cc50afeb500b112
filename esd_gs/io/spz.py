"""Niantic's SPZ (gsply's encoder and decoder): version 3, the gzip container that Babylon.js, PlayCanvas and
Scaniverse read, with its quantisation (24-bit fixed-point positions with 12 fractional bits, 8-bit log
scales, smallest-three quaternions, 8-bit opacity, colour and SH bands (the specification allows the
coarser 5/4-bit SH buckets of Niantic's library; gsply keeps 8 bits)), SH up to degree 3. SPZ stores y-up data (RUB, three.js's frame): `esd-gs export --spz`
turns the splats first (esd_gs/io/orient.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .atomic import atomic_path, reads_back

SPZ_VERSION = 3


SPZ_MAX_COORDINATE = 2.0**11  # 24-bit signed fixed point with 12 fractional bits


def write_spz(path: str | os.PathLike, splats) -> None:
    import gsply

    a = {k: splats[k].detach().cpu().to(torch.float32) for k in ("means", "scales", "quats", "opacities", "sh0", "shN")}
    far = a["means"].abs().max().item() if len(a["means"]) else 0.0
    if not far < SPZ_MAX_COORDINATE:  # NaN too
        raise UserError(f"refusing to write {path}: SPZ holds positions below {SPZ_MAX_COORDINATE:g} in size (24-bit "
                        f"fixed point), and these reach {far:.3g}")
    data = gsply.GSData(means=a["means"].numpy(), scales=a["scales"].numpy(),
                        quats=torch.nn.functional.normalize(a["quats"], dim=-1).numpy(),
                        opacities=a["opacities"].numpy(), sh0=a["sh0"][:, 0].numpy(), shN=a["shN"].numpy())
    with atomic_path(path, verify=reads_back(read_spz, len(splats["means"]))) as tmp:
        gsply.write_spz(tmp, data, version=SPZ_VERSION)


def read_spz(path: str | os.PathLike) -> dict[str, Tensor]:
    import gsply

    path = Path(path)
    try:
        d = gsply.read_spz(path)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .spz ({type(e).__name__}: {str(e)[:100]})") from None

    def t(x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    shn = t(d.shN) if d.shN is not None and d.shN.size else torch.zeros(len(d.means), 0, 3)
    return {"means": t(d.means), "scales": t(d.scales), "quats": t(d.quats), "opacities": t(d.opacities),
            "sh0": t(d.sh0)[:, None], "shN": shn.reshape(len(d.means), -1, 3)}
