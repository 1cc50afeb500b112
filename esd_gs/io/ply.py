"""INRIA-layout 3DGS PLY files (plyfile): x y z, nx ny nz, f_dc_0..2, f_rest_*, opacity (logit),
scale_0..2 (log), rot_0..3 (wxyz). f_rest is channel-major (all R coefficients, then G, then B),
as the original 3DGS code and `gsplat.export_splats` write it.

Reading validates before allocating: a header that claims more vertices than the file can hold,
missing fields, an SH count that is no degree, or non-finite values raise a one-line UserError.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from ..core.gaussians import SH_C0
from ..errors import UserError
from .atomic import atomic_path, reads_back
from .orient import Up, from_up, to_up

REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
          "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
_MAX_HEADER = 1 << 24
_END_HEADER = re.compile(rb"^end_header[ \t]*\r?$", re.M)


FRAME_COMMENT = "esd-gs up "  # + the frame: read_ply turns a file written in another frame back into ours
FRAME_WORDS = {"z": "z up, front towards +x: esd-gs's own frame",
               "y": "y up, front towards +z: glTF's frame",
               "-y": "y down, front towards +z: INRIA/COLMAP's frame, upright in SuperSplat and mkkellogg's viewer"}


def write_ply(path: str | os.PathLike, splats, up: Up = "z") -> None:
    """Writes raw (pre-activation) splats atomically, turned into the frame `up` (io/orient.py), which two header
    comments name: one for people, one that read_ply uses to turn them back. Refuses non-finite values."""
    if up != "z":
        splats = to_up(splats, up)
    t = {k: splats[k].detach().float().cpu() for k in ("means", "sh0", "shN", "opacities", "scales", "quats")}
    n = len(t["means"])
    if not all(torch.isfinite(v).all() for v in t.values()):
        raise UserError(f"refusing to write {path}: the model contains NaN or Inf values")
    f_rest = t["shN"].transpose(1, 2).reshape(n, -1)
    columns = ([("x", t["means"][:, 0]), ("y", t["means"][:, 1]), ("z", t["means"][:, 2])]
               + [(name, torch.zeros(n)) for name in ("nx", "ny", "nz")]
               + [(f"f_dc_{i}", t["sh0"][:, 0, i]) for i in range(3)]
               + [(f"f_rest_{i}", f_rest[:, i]) for i in range(f_rest.shape[1])]
               + [("opacity", t["opacities"])]
               + [(f"scale_{i}", t["scales"][:, i]) for i in range(3)]
               + [(f"rot_{i}", t["quats"][:, i]) for i in range(4)])
    data = np.empty(n, dtype=[(name, "<f4") for name, _ in columns])
    for name, values in columns:
        data[name] = values.numpy()
    comments = [f"{FRAME_COMMENT}{up}", f"frame: {FRAME_WORDS[up]}"]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], byte_order="<", comments=comments).write(str(tmp))


def compressed_kept(splats) -> Tensor:
    """Which splats SuperSplat's compressed PLY keeps (gsplat's exporter): finite ones with opacity above
    1/255, below which every renderer skips a splat anyway."""
    keys = ("means", "scales", "quats", "opacities", "sh0", "shN")
    finite = torch.stack([splats[k].detach().reshape(len(splats["means"]), -1).isfinite().all(1) for k in keys]).all(0)
    return finite & (torch.sigmoid(splats["opacities"].detach()) > 1 / 255)


def write_compressed_ply(path: str | os.PathLike, splats) -> int:
    """Writes SuperSplat's compressed PLY (gsplat's exporter) atomically; returns how many splats it holds
    (compressed_kept). Degree 0 has no `sh` element, as SuperSplat writes it: gsplat's empty one hangs
    PlayCanvas, and zero degree-1 bands in its place read as +0.0156 (byte 128) in every reader."""
    from gsplat import export_splats

    n = int(compressed_kept(splats).sum())
    if n == 0:
        raise UserError(f"refusing to write {path}: every splat is transparent (opacity <= 1/255) or not finite, "
                        "and the compressed format leaves those out")
    tensors = [splats[k].detach().float().cpu() for k in ("means", "scales", "quats", "opacities", "sh0", "shN")]
    data = export_splats(*tensors, format="ply_compressed")
    if tensors[-1].shape[1] == 0:
        data = data.replace(f"element sh {n}\nend_header\n".encode(), b"end_header\n", 1)
    with atomic_path(path, verify=reads_back(read_ply, n)) as tmp:
        tmp.write_bytes(data)
    return n


def _read_compressed(path: Path, ply: PlyData) -> dict[str, Tensor]:
    """SuperSplat's compressed PLY: chunks of 256 splats with float bounds, positions and log scales as
    11/10/11-bit fractions of them, colour and opacity as 8-bit ones, quaternions as the smallest three at 10
    bits, SH bands as bytes (decoded as PlayCanvas decodes them)."""
    chunk, vertex = ply["chunk"].data, ply["vertex"].data
    n = len(vertex)
    if n == 0:
        raise UserError(f"{path} holds no Gaussians")
    if len(chunk) * 256 < n:
        raise UserError(f"{path}: {len(chunk)} chunks cannot hold {n} splats (corrupt compressed PLY)")
    bounds = lambda *names: torch.from_numpy(np.stack([chunk[f] for f in names], -1).astype(np.float32))  # noqa: E731
    of_chunk = torch.arange(n) // 256
    lo_hi = lambda names: (bounds(*[f"min_{x}" for x in names])[of_chunk],  # noqa: E731
                           bounds(*[f"max_{x}" for x in names])[of_chunk])
    packed = {k: torch.from_numpy(vertex[k].astype(np.int64)) for k in
              ("packed_position", "packed_rotation", "packed_scale", "packed_color")}

    def unpack(v: Tensor, bits: tuple[int, ...]) -> Tensor:
        out, shift = [], sum(bits)
        for b in bits:
            shift -= b
            out.append(((v >> shift) & ((1 << b) - 1)).float() / ((1 << b) - 1))
        return torch.stack(out, -1)

    lerp = lambda t, lo_hi: lo_hi[0] + t * (lo_hi[1] - lo_hi[0])  # noqa: E731
    means = lerp(unpack(packed["packed_position"], (11, 10, 11)), lo_hi(["x", "y", "z"]))
    scales = lerp(unpack(packed["packed_scale"], (11, 10, 11)), lo_hi(["scale_x", "scale_y", "scale_z"]))
    rgba = unpack(packed["packed_color"], (8, 8, 8, 8))
    colour = lerp(rgba[:, :3], lo_hi(["r", "g", "b"]))
    three = (unpack(packed["packed_rotation"], (10, 10, 10)) - 0.5) * math.sqrt(2)
    largest = (packed["packed_rotation"] >> 30) & 3
    quats = torch.zeros(n, 4)
    rest = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    quats.scatter_(1, rest, three)
    quats.scatter_(1, largest[:, None], (1 - three.square().sum(-1, keepdim=True)).clamp_min(0).sqrt())
    alpha = rgba[:, 3].clamp(0.5 / 255, 1 - 0.5 / 255)
    n_rest = len(ply["sh"].data.dtype.names or ()) if "sh" in ply else 0
    shn = torch.zeros(n, 0, 3)
    if n_rest:
        raw = np.stack([ply["sh"].data[f"f_rest_{i}"] for i in range(n_rest)], -1).astype(np.float32)
        shn = ((torch.from_numpy(raw) + 0.5) / 256 - 0.5).mul(8).reshape(n, 3, -1).transpose(1, 2).contiguous()
    return {"means": means, "sh0": ((colour - 0.5) / SH_C0)[:, None], "shN": shn,
            "opacities": torch.log(alpha / (1 - alpha)), "scales": scales, "quats": quats}


def _check_header(path: Path) -> None:
    """Parses the header ourselves so that a lying vertex count never reaches an allocation."""
    size = path.stat().st_size
    head, match = b"", None
    with open(path, "rb") as f:  # read on until end_header: headers of many comments pass 64 KB
        while match is None and len(head) < _MAX_HEADER and (chunk := f.read(1 << 16)):
            head += chunk
            if not head.startswith(b"ply"):
                raise UserError(f"{path} is not a PLY file (it does not start with 'ply')")
            match = _END_HEADER.search(head)  # a line of its own: a comment may mention end_header
    if not head.startswith(b"ply"):
        raise UserError(f"{path} is not a PLY file (it does not start with 'ply')")
    if match is None:
        raise UserError(f"{path}: PLY header has no end_header" + (" in its first 16 MiB" if len(head) >= _MAX_HEADER
                                                                   else " (truncated or not a PLY file)"))
    end = match.start()
    header = head[:end].decode("ascii", errors="replace")
    body_start = head.index(b"\n", end) + 1 if b"\n" in head[end:] else size
    fmt = re.search(r"^format (\S+)", header, re.M)
    if fmt is None:
        raise UserError(f"{path}: PLY header has no format line")
    elements, current = [], None
    for line in header.splitlines():
        parts = line.split()
        if parts[:1] == ["element"] and len(parts) == 3 and parts[2].isdigit():
            current = [parts[1], int(parts[2]), 0, False]
            elements.append(current)
        elif parts[:1] == ["property"]:
            if current is None or len(parts) < 3:
                raise UserError(f"{path}: malformed PLY header line '{line.strip()[:60]}'")
            if parts[1] == "list":
                current[3] = True
            else:
                current[2] += _SIZES.get(parts[1], 4)
    vertex = [e for e in elements if e[0] == "vertex"]
    if not vertex:
        raise UserError(f"{path}: PLY file has no vertex element")
    body = size - body_start
    if fmt.group(1).startswith("binary"):
        need = sum(count * row for _, count, row, has_list in elements if not has_list)
        if need > body:
            raise UserError(f"{path}: header claims {vertex[0][1]} vertices ({need} bytes) but only {body} "
                            "bytes follow (truncated or corrupt file)")
    elif vertex[0][1] > body:  # ascii: every vertex takes at least one byte
        raise UserError(f"{path}: header claims {vertex[0][1]} vertices but the file is too short")


def read_ply(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a 3DGS PLY into raw tensors (means, scales, quats, opacities, sh0 [N,1,3], shN [N,K,3])."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"PLY file not found: {path}" if not path.exists() else f"{path} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    try:
        _check_header(path)
        ply = PlyData.read(str(path))
        if "chunk" in ply and "packed_position" in (ply["vertex"].data.dtype.names or ()):
            return _read_compressed(path, ply)
        vertex = ply["vertex"].data
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    except UserError:
        raise
    except Exception as e:  # plyfile raises many types on malformed bodies
        raise UserError(f"{path}: cannot parse PLY ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    names = vertex.dtype.names or ()
    missing = [f for f in REQUIRED if f not in names]
    if missing:
        raise UserError(f"{path}: not a Gaussian-splat PLY (missing fields: {', '.join(missing)})")
    n_rest = sum(1 for f in names if f.startswith("f_rest_"))
    if {f for f in names if f.startswith("f_rest_")} != {f"f_rest_{i}" for i in range(n_rest)}:
        raise UserError(f"{path}: f_rest fields are not numbered 0..{n_rest - 1}")
    degree = math.isqrt(n_rest // 3 + 1) - 1
    if n_rest % 3 or (degree + 1) ** 2 - 1 != n_rest // 3 or degree > 3:
        raise UserError(f"{path}: {n_rest} f_rest fields is not a spherical-harmonics degree 0..3")
    if len(vertex) == 0:
        raise UserError(f"{path} holds no Gaussians")

    def cols(fields):
        with np.errstate(invalid="ignore"):  # a damaged file's bad values are refused just below
            values = np.stack([np.asarray(vertex[f], dtype=np.float64) for f in fields], axis=-1)
        if not np.isfinite(values).all():
            raise UserError(f"{path}: contains NaN or Inf values (in {', '.join(fields)})")
        if (np.abs(values) > np.finfo(np.float32).max).any():
            raise UserError(f"{path}: values in {', '.join(fields)} lie outside the float32 range")
        return torch.from_numpy(values.astype(np.float32))

    n = len(vertex)
    out = {
        "means": cols(["x", "y", "z"]),
        "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :],
        "shN": cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, -1).transpose(1, 2).contiguous()
        if n_rest else torch.zeros(n, 0, 3),
        "opacities": cols(["opacity"])[:, 0],
        "scales": cols(["scale_0", "scale_1", "scale_2"]),
        "quats": cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
    }
    if (out["quats"].norm(dim=-1) == 0).any():
        raise UserError(f"{path}: contains zero-length rotation quaternions")
    up = next((c[len(FRAME_COMMENT):].strip() for c in ply.comments if c.startswith(FRAME_COMMENT)), "z")
    if up not in FRAME_WORDS:
        raise UserError(f"{path}: its header names an unknown esd-gs frame {up!r}")
    return from_up(out, up) if up != "z" else out


def resolve_ply(path: str | os.PathLike) -> Path:
    """A run folder means its splats.ply."""
    path = Path(path)
    return path / "splats.ply" if path.is_dir() else path


def load_splats(path: str | os.PathLike, device: str = "auto") -> torch.nn.ParameterDict:
    """PLY file or run folder -> trainable splats on the chosen device (auto: CUDA when present)."""
    from ..core.device import pick_device
    from ..core.gaussians import splats_from_tensors

    return splats_from_tensors(read_ply(resolve_ply(path)), pick_device(device))
