"""Binary glTF (.glb) with the Khronos KHR_gaussian_splatting extension (pygltflib): one point primitive
whose attributes are the splats, activated as the extension defines them:

  POSITION                                      means
  KHR_gaussian_splatting:ROTATION               unit quaternions, glTF's xyzw order (ours: wxyz)
  KHR_gaussian_splatting:SCALE                  exp(log scales)
  KHR_gaussian_splatting:OPACITY                sigmoid(logit)
  KHR_gaussian_splatting:SH_DEGREE_0_COEF_0     sh0 (colour = 0.2820948 * sh0 + 0.5, as in training)
  KHR_gaussian_splatting:SH_DEGREE_l_COEF_n     the shN bands of degree l, m = -l..l (gsplat's order)
  COLOR_0                                       fallback for readers without the extension: the diffuse
                                                colour decoded from sRGB to linear, opacity in alpha

kernel "ellipse", colorSpace "srgb_rec709_display" (the prior's images are display sRGB). The data are
written in the caller's frame: glTF is y-up, so `esd-gs export --glb` turns the splats first
(esd_gs/io/orient.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.gaussians import num_sh_bases, sh_degree_of
from ..errors import UserError
from .atomic import atomic_path, reads_back

EXT = "KHR_gaussian_splatting"
SH_C0 = 0.28209479177387814
FLOAT, POINTS, ARRAY_BUFFER = 5126, 0, 34962  # ARRAY_BUFFER: the bufferView target of vertex attributes
TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}


def sh_attribute(degree: int, coef: int) -> str:
    return f"{EXT}:SH_DEGREE_{degree}_COEF_{coef}"


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def splat_attributes(splats) -> dict[str, np.ndarray]:
    """The extension's attributes (and COLOR_0) as float32 arrays [N, components]."""
    def arr(t: Tensor) -> np.ndarray:
        return t.detach().cpu().to(torch.float32).numpy()

    quats = torch.nn.functional.normalize(splats["quats"].detach().float(), dim=-1)
    opacity = torch.sigmoid(splats["opacities"].detach().float())
    attrs = {"POSITION": arr(splats["means"]), f"{EXT}:ROTATION": arr(quats[:, [1, 2, 3, 0]]),
             f"{EXT}:SCALE": arr(torch.exp(splats["scales"])), f"{EXT}:OPACITY": arr(opacity)[:, None],
             sh_attribute(0, 0): arr(splats["sh0"][:, 0])}
    shn = arr(splats["shN"])
    for degree in range(1, sh_degree_of(splats) + 1):
        first = num_sh_bases(degree - 1) - 1  # shN index of (degree, m = -degree)
        for coef in range(2 * degree + 1):
            attrs[sh_attribute(degree, coef)] = shn[:, first + coef]
    diffuse = np.clip(attrs[sh_attribute(0, 0)] * SH_C0 + 0.5, 0.0, 1.0)
    attrs["COLOR_0"] = np.concatenate([srgb_to_linear(diffuse), attrs[f"{EXT}:OPACITY"]], axis=1).astype(np.float32)
    return attrs


def write_glb(path: str | os.PathLike, splats) -> None:
    """Writes the splats as a .glb (atomically)."""
    import pygltflib as gl

    attrs = splat_attributes(splats)
    blob, views, accessors = bytearray(), [], []
    for i, (name, a) in enumerate(attrs.items()):
        a = np.ascontiguousarray(a, dtype=np.float32)
        views.append(gl.BufferView(buffer=0, byteOffset=len(blob), byteLength=a.nbytes, target=ARRAY_BUFFER))
        accessors.append(gl.Accessor(bufferView=i, componentType=FLOAT, count=len(a), type=TYPES[a.shape[1]],
                                     **({"min": a.min(0).tolist(), "max": a.max(0).tolist()} if name == "POSITION"
                                        else {})))
        blob += a.tobytes()  # float32 data keeps every view 4-byte aligned
    primitive = gl.Primitive(attributes=gl.Attributes(), mode=POINTS,
                             extensions={EXT: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}})
    primitive.attributes = {name: i for i, name in enumerate(attrs)}  # the extension's names are not fields
    gltf = gl.GLTF2(asset=gl.Asset(version="2.0", generator="esd-gs"), scene=0, scenes=[gl.Scene(nodes=[0])],
                    nodes=[gl.Node(mesh=0)], meshes=[gl.Mesh(primitives=[primitive])],
                    buffers=[gl.Buffer(byteLength=len(blob))], bufferViews=views, accessors=accessors,
                    extensionsUsed=[EXT])
    gltf.set_binary_blob(bytes(blob))
    with atomic_path(path, verify=reads_back(read_glb, len(splats["means"]))) as tmp:
        gltf.save_binary(str(tmp))


def read_glb(path: str | os.PathLike) -> dict[str, Tensor]:
    """The splats of a .glb with KHR_gaussian_splatting (float attributes), in our tensor layout."""
    import pygltflib as gl

    path = Path(path)
    try:
        gltf = gl.GLTF2().load_binary(str(path))
    except Exception as e:
        raise UserError(f"{path}: not a readable .glb ({type(e).__name__}: {str(e)[:100]})") from None
    blob = gltf.binary_blob()
    primitive = next((p for m in gltf.meshes for p in m.primitives if EXT in (p.extensions or {})), None)
    if primitive is None:
        raise UserError(f"{path}: no mesh primitive with the {EXT} extension")
    attributes = primitive.attributes if isinstance(primitive.attributes, dict) else primitive.attributes.__dict__

    def read(name: str) -> Tensor:
        accessor = gltf.accessors[attributes[name]]
        if accessor.componentType != FLOAT:
            raise UserError(f"{path}: {name} is not float (quantized attributes are not read here)")
        view = gltf.bufferViews[accessor.bufferView]
        width = {v: k for k, v in TYPES.items()}[accessor.type]
        start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
        return torch.from_numpy(np.frombuffer(blob, np.float32, accessor.count * width, start).reshape(-1, width).copy())

    degree = 0
    while sh_attribute(degree + 1, 0) in attributes:
        degree += 1
    shn = [read(sh_attribute(d, c)) for d in range(1, degree + 1) for c in range(2 * d + 1)]
    quats = read(f"{EXT}:ROTATION")
    n = len(quats)
    return {"means": read("POSITION"), "quats": quats[:, [3, 0, 1, 2]], "scales": read(f"{EXT}:SCALE").log(),
            "opacities": torch.logit(read(f"{EXT}:OPACITY")[:, 0].double(), eps=1e-7).float(),
            "sh0": read(sh_attribute(0, 0))[:, None], "shN": torch.stack(shn, 1) if shn else torch.zeros(n, 0, 3)}
