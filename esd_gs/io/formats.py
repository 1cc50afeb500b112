"""The splat formats esd-gs exports, one row each: the export flag, the writer, the frame written by default.

A writer takes the splats in esd-gs's frame and the frame to write (io/orient.py) and returns how many splats
the file holds (a format may leave some out). `esd-gs export` reads this table; a new format is a row here and
a field of commands/export.py's ExportArgs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
from .gltf import write_glb
from .orient import Up, to_up
from .ply import write_compressed_ply, write_ply
from .spz import write_spz


def write_splat(path: Path, splats, up: Up) -> int:
    """antimatter15's .splat (gsplat's exporter)."""
    from gsplat import export_splats

    turned = to_up(splats, up)
    with atomic_path(path) as tmp:
        export_splats(*[turned[k].detach().cpu() for k in ("means", "scales", "quats", "opacities", "sh0", "shN")],
                      format="splat", save_to=str(tmp))
    return len(splats["means"])


def write_plain_ply(path: Path, splats, up: Up) -> int:
    write_ply(path, splats, up=up)
    return len(splats["means"])


@dataclass(frozen=True)
class SplatFormat:
    name: str
    """What the printed line calls it."""
    default_up: Up
    """The frame its readers expect: glTF and SPZ are y-up by specification; PLY and .splat viewers (SuperSplat,
    mkkellogg's) assume INRIA/COLMAP's y-down frame."""
    write: Callable[[Path, dict, Up], int]


FORMATS = {  # the export flag: its format
    "ply": SplatFormat("PLY", "-y", write_plain_ply),
    "compressed_ply": SplatFormat("SuperSplat's compressed PLY", "-y",
                                  lambda path, splats, up: write_compressed_ply(path, to_up(splats, up))),
    "splat": SplatFormat(".splat", "-y", write_splat),
    "glb": SplatFormat("glTF KHR_gaussian_splatting", "y", lambda path, splats, up: write_glb(path, to_up(splats, up))
                       or len(splats["means"])),
    "spz": SplatFormat("SPZ", "y", lambda path, splats, up: write_spz(path, to_up(splats, up)) or len(splats["means"])),
}
MESH_UP = {".glb": "y", ".gltf": "y"}  # meshes: glTF's frame for glTF files, esd-gs's own (z) for the others
