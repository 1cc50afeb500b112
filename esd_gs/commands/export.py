"""`esd-gs export`: a run's splats in another format (io/formats.py's table) or as a mesh (io/mesh.py), turned
into the frame each format's readers expect, and about the vertical axis on request."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from ..errors import UserError
from ..io.formats import FORMATS, MESH_UP
from ..io.mesh import MeshConfig
from .args import check_orbit, check_turntable, parse


@dataclass
class ExportArgs:
    """Export a PLY or run folder: a vertex-coloured mesh (TSDF fusion of rendered RGB-D), a .splat file
    for web viewers, an SH-truncated PLY or SuperSplat's compressed PLY, a glTF with the
    KHR_gaussian_splatting extension, Niantic's SPZ."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    mesh: Path | None = None
    """Write a triangle mesh here (.ply, .obj, .glb)."""
    splat: Path | None = None
    """Write antimatter15's .splat format here (gsplat's exporter)."""
    ply: Path | None = None
    """Write the splats again as PLY here (with --sh-degree, --compressed)."""
    glb: Path | None = None
    """Write a binary glTF with the KHR_gaussian_splatting extension here (three.js, Babylon.js, PlayCanvas,
    Cesium)."""
    spz: Path | None = None
    """Write Niantic's SPZ here (Babylon.js, PlayCanvas, Scaniverse; about 10x smaller than PLY)."""
    sh_degree: int | None = None
    """Keep SH bands up to this degree in --ply / --splat / --glb / --spz (default: all)."""
    compressed: bool = False
    """--ply in SuperSplat's compressed layout."""
    up: Literal["auto", "z", "y", "-y"] = "auto"
    """Up axis of the written files. z: esd-gs's own frame (front towards +x); y: glTF's and three.js's
    (front towards +z); -y: INRIA/COLMAP's, which SuperSplat and mkkellogg's viewer assume for .ply and
    .splat (a run's splats.ply is written so). auto: y for .glb (glTF is y-up by specification) and .spz
    (stored y-up by its specification), -y for .ply and .splat, z for meshes. A PLY names its frame in its
    header, and esd-gs reads any of them back into its own."""
    yaw: str | None = None
    """Turn the object about its vertical axis before writing: degrees (counter-clockwise seen from above), or
    'front' to turn its front towards esd-gs's +x, which every --up frame maps to the side a viewer's default
    camera sees (glTF's +z): from the Janus report's best alignment for runs on the synthetic head (a run
    folder's config.yaml says), 0 for Stable Diffusion runs with view prompts (their "front view" is +x)."""
    mesh_options: tyro.conf.OmitArgPrefixes[MeshConfig] = dataclasses.field(default_factory=MeshConfig)
    device: str = "auto"


def export_yaw(args: ExportArgs, splats) -> float:
    """--yaw in degrees; 'front' from where the run's front is (see ExportArgs.yaw)."""
    import math

    if args.yaw is None:
        return 0.0
    if args.yaw != "front":
        try:
            deg = float(args.yaw)
        except ValueError:
            raise UserError(f"--yaw takes degrees or 'front' (got {args.yaw!r})") from None
        if not math.isfinite(deg):
            raise UserError(f"--yaw must be a finite number of degrees (got {args.yaw!r})")
        return deg
    if not (Path(args.path) / "config.yaml").is_file():
        raise UserError(f"--yaw front needs a run folder (its config.yaml tells where the front is); {args.path} "
                        "is not one: pass --yaw DEG")
    from ..config import saved_config
    from ..worlds.stable_diffusion import knows_synthetic_head

    cfg = saved_config(Path(args.path))  # a damaged one: a one-line error naming it
    if cfg.get("world") == "synthetic" or knows_synthetic_head(str(cfg.get("model_path") or "")):
        from ..synthetic.janus import janus_report

        return -janus_report(splats)["front_azimuth_deg"]
    if (cfg.get("prior") or {}).get("view_dependent_prompt", True):
        return 0.0
    raise UserError(f"--yaw front: {args.path} was trained without view prompts, so nothing fixed its front; "
                    "pass --yaw DEG")


def export_up(args: ExportArgs, flag: str, target: Path) -> str:
    """The frame a file is written in: --up, or its format's (io/formats.py)."""
    if args.up != "auto":
        return args.up
    return MESH_UP.get(target.suffix.lower(), "z") if flag == "mesh" else FORMATS[flag].default_up


def check_mesh_options(m: MeshConfig) -> None:
    check_turntable("--views", m.views, m.resolution)
    check_orbit(m.radius, m.fovy_deg)
    if not (m.voxel_size > 0 and m.truncation_voxels > 0 and 0 <= m.alpha_min <= 1 and m.target_triangles >= 0):
        raise UserError(f"--voxel-size and --truncation-voxels must be positive, --alpha-min in [0, 1] and "
                        f"--target-triangles at least 0 (got {m.voxel_size}, {m.truncation_voxels}, {m.alpha_min}, "
                        f"{m.target_triangles})")


def cmd_export(argv: list[str]) -> None:
    from ..core.gaussians import splats_from_tensors, truncate_sh
    from ..io.atomic import check_output_file
    from ..io.mesh import splats_to_mesh, write_mesh
    from ..io.orient import UP_ROTATIONS, rotate_splats, yaw_rotation
    from ..io.ply import load_splats

    args = parse(ExportArgs, argv, "esd-gs export")
    flag_of = lambda name: "compressed_ply" if name == "ply" and args.compressed else name  # noqa: E731
    targets = {flag_of(name): getattr(args, name) for name in ("ply", "splat", "glb", "spz", "mesh")
               if getattr(args, name)}
    if not targets:
        raise UserError("nothing to export: pass --mesh OUT.ply|.obj|.glb, --splat OUT.splat, --ply OUT.ply, "
                        "--glb OUT.glb or --spz OUT.spz")
    for target in targets.values():
        check_output_file(target)
    if args.mesh:
        check_mesh_options(args.mesh_options)
    splats = load_splats(args.path, args.device)
    yaw = export_yaw(args, splats)
    if yaw:
        splats = splats_from_tensors(rotate_splats(splats, yaw_rotation(yaw)), splats["means"].device)
        print(f"turned {yaw:+.1f} deg about the vertical axis")
    kept = truncate_sh(splats, args.sh_degree)
    n = len(kept["means"])
    for flag, target in targets.items():
        up = export_up(args, flag, target)
        if flag == "mesh":
            mesh = splats_to_mesh(splats, args.mesh_options)
            mesh.rotate(UP_ROTATIONS[up].double().numpy(), center=(0.0, 0.0, 0.0))
            write_mesh(target, mesh)
            print(f"wrote {target} ({len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles, {up}-up)")
            continue
        written = FORMATS[flag].write(target, kept, up)
        left = f"; {n - written} with opacity <= 1/255 left out, as the format does" if written < n else ""
        print(f"wrote {target} ({written} Gaussians, {FORMATS[flag].name}, {up}-up{left})")
