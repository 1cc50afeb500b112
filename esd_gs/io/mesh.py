"""Splats -> vertex-coloured triangle mesh: render RGB-D from many views, fuse with open3d's TSDF.

Views sit on a Fibonacci sphere around the object (every side, from below too). Each view's expected
depth is kept where the render is opaque (alpha >= alpha_min), so the soft silhouette rim and the
background never enter the volume. Cleanup keeps the largest connected component (floaters are
separate islands) and optionally decimates with quadric error metrics.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, fibonacci_lattice, make_cameras
from ..core.memory import check_fits, image_bytes
from ..errors import UserError
from ..render import render_frames
from .atomic import atomic_path

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf")
MAX_GRID = 384  # TSDF cells per side (memory grows with its cube)


@dataclass
class MeshConfig:
    views: int = 64
    """Cameras on a sphere around the object."""
    resolution: int = 256
    radius: float = ORBIT_RADIUS
    fovy_deg: float = ORBIT_FOVY_DEG
    voxel_size: float = 0.008
    """TSDF voxel edge in world units (objects span about one unit); at most 384 voxels per side."""
    truncation_voxels: float = 4.0
    """TSDF truncation distance, in voxels."""
    alpha_min: float = 0.5
    """Pixels less opaque than this carry no depth."""
    keep_largest: bool = True
    """Drop every connected component but the largest (floaters)."""
    target_triangles: int = 0
    """Quadric decimation to about this many triangles (0: keep all)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"


def sphere_views(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuths and elevations (deg) of n near-uniform directions (Fibonacci sphere), poles excluded
    (look-at with a z-up vector is undefined straight above and below)."""
    z, azimuth = fibonacci_lattice(n, torch.float64)
    z, azimuth = z.clamp(-0.97, 0.97), torch.remainder(azimuth, 2 * math.pi)
    return torch.rad2deg(azimuth).float() - 180.0, torch.rad2deg(torch.asin(z)).float()


def splats_to_mesh(splats, cfg: MeshConfig):
    """Returns an open3d TriangleMesh with vertex colours."""
    import open3d as o3d

    check_fits(image_bytes(cfg.views, cfg.resolution), f"{cfg.views} depth views at {cfg.resolution}x{cfg.resolution}",
               "lower --resolution or --views")
    az, el = sphere_views(cfg.views)
    cams = make_cameras(az, el, cfg.radius, cfg.fovy_deg, cfg.resolution)
    rgb, depth, alpha = render_frames(splats, cams, background=(1.0, 1.0, 1.0), backend=cfg.backend)
    depth = torch.where(alpha >= cfg.alpha_min, depth, torch.zeros_like(depth))
    # a cube around the opaque Gaussians (open3d 0.20's ScalableTSDFVolume extracts nothing here)
    means = splats["means"].detach()[torch.sigmoid(splats["opacities"].detach()) > 0.1].cpu()
    if len(means) == 0:
        raise UserError("no Gaussian is opaque enough (opacity > 0.1) to make a mesh from")
    half = float(torch.quantile(means.abs().max(dim=1).values, 0.995)) + 0.1
    cells = min(MAX_GRID, math.ceil(2 * half / cfg.voxel_size))
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=2 * half, resolution=cells, sdf_trunc=cfg.truncation_voxels * 2 * half / cells,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=np.full((3, 1), -half))
    for k in range(len(cams)):
        K = cams.Ks[k].double()
        # our pixel centres sit at +0.5 (gsplat); open3d's at integers
        intrinsic = o3d.camera.PinholeCameraIntrinsic(cfg.resolution, cfg.resolution, K[0, 0].item(),
                                                      K[1, 1].item(), K[0, 2].item() - 0.5, K[1, 2].item() - 0.5)
        colour = o3d.geometry.Image(np.ascontiguousarray((rgb[k].cpu().numpy() * 255).round().astype(np.uint8)))
        d = o3d.geometry.Image(np.ascontiguousarray(depth[k, ..., 0].cpu().numpy().astype(np.float32)))
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            colour, d, depth_scale=1.0, depth_trunc=1e6, convert_rgb_to_intensity=False)
        volume.integrate(rgbd, intrinsic, cams.viewmats[k].double().cpu().numpy())
    mesh = volume.extract_triangle_mesh()
    if len(mesh.triangles) == 0:
        raise UserError("the fused mesh is empty: nothing opaque was rendered (check --radius and the PLY)")
    return clean_mesh(mesh, cfg)


def clean_mesh(mesh, cfg: MeshConfig):
    if cfg.keep_largest:
        labels, counts, _ = mesh.cluster_connected_triangles()
        labels, counts = np.asarray(labels), np.asarray(counts)
        mesh.remove_triangles_by_mask(labels != counts.argmax())
        mesh.remove_unreferenced_vertices()
    if cfg.target_triangles and len(mesh.triangles) > cfg.target_triangles:
        mesh = mesh.simplify_quadric_decimation(cfg.target_triangles)
    mesh.remove_degenerate_triangles()
    mesh.remove_duplicated_vertices()
    mesh.compute_vertex_normals()
    return mesh


@contextlib.contextmanager
def quiet_stderr():
    """Silences a C library's own stderr (open3d's PLY writer prints a line per failed element on a full
    disk: thousands); the written file is checked by reading it back instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_back(tmp: Path, n_vertices: int) -> str | None:
    """None when the file holds the mesh's vertices; else what is wrong."""
    import trimesh

    try:
        loaded = trimesh.load(tmp, file_type=tmp.suffix[1:], force="mesh", process=False)
    except Exception as e:
        return f"it does not read back ({type(e).__name__})"
    return None if len(loaded.vertices) == n_vertices else \
        f"it reads back with {len(loaded.vertices)} of {n_vertices} vertices"


def write_mesh(path: str | Path, mesh) -> None:
    """.ply / .obj through open3d; .glb / .gltf through trimesh (open3d 0.20 writes GLB buffers that
    assimp, open3d's own reader, rejects)."""
    import open3d as o3d

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise UserError(f"mesh format '{path.suffix}' is not supported (use one of {', '.join(MESH_SUFFIXES)})")
    with atomic_path(path, verify=partial(_read_back, n_vertices=len(mesh.vertices))) as tmp, quiet_stderr():
        if suffix in (".glb", ".gltf"):
            import trimesh

            colours = (np.asarray(mesh.vertex_colors) * 255).round().astype(np.uint8)
            trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), vertex_colors=colours,
                            process=False).export(tmp, file_type=suffix[1:])
        elif not o3d.io.write_triangle_mesh(str(tmp), mesh, write_vertex_colors=True):
            raise UserError(f"open3d could not write {path}")
