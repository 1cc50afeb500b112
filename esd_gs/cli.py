"""`esd-gs` command line (tyro): train | janus | render | view | export | bench."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from .cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG
from .errors import UserError
from .mesh import MeshConfig

USAGE = """usage: esd-gs {train,janus,render,view,export,bench} [--help] ...

  train    optimise Gaussians for a prompt with SDS / VSD / ESD (esd-gs train --preset demo)
  janus    Janus metric of a synthetic-world result (front_share, face_count, ...)
  render   turntable GIF / MP4 / PNG frames (RGB and depth) of a PLY or run folder
  view     interactive viewer in the browser (viser)
  export   mesh (open3d TSDF fusion) from a PLY or run folder
  bench    speed: `bench raster` (rasterizer) or `bench step` (one training step, per component)
"""


def cmd_train(argv: list[str]) -> None:
    from .config import TrainConfig, load_preset
    from .train import Trainer

    preset = None
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    default = load_preset(preset) if preset else TrainConfig()
    cfg = tyro.cli(TrainConfig, default=default, args=argv, prog="esd-gs train")
    result = Trainer(cfg).train()
    print(f"done: {result['run_dir']} ({result['n_gaussians']} Gaussians, {result['skipped_steps']} skipped steps)")
    if "janus" in result:  # the synthetic world's end-of-run report
        j = result["janus"]
        print(f"janus={j['janus']} front_share={j['front_share']:.2f} faces={j['face_count']} "
              f"view_error={j['view_error_deg']:.1f}deg variety={j['view_variety']:.2f}")


@dataclass
class JanusArgs:
    """Janus metric of a synthetic-world result; writes janus.json next to the PLY."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""


def cmd_janus(argv: list[str]) -> None:
    import json

    from .io.atomic import write_json
    from .io.ply import load_splats, resolve_ply
    from .synthetic.janus import janus_report

    args = tyro.cli(JanusArgs, args=argv, prog="esd-gs janus")
    report = janus_report(load_splats(args.path, "cpu"))
    write_json(resolve_ply(args.path).parent / "janus.json", report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))


@dataclass
class RenderArgs:
    """Turntable of a PLY or run folder: GIF, MP4 or a folder of PNG frames; RGB and optionally depth."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    output: Path | None = None
    """File (.gif/.mp4) or folder (png); default: turntable_render.<format> next to the PLY."""
    format: Literal["gif", "mp4", "png"] = "gif"
    frames: int = 36
    resolution: int = 256
    elevation_deg: float = VIEW_ELEVATION_DEG
    radius: float = ORBIT_RADIUS
    fovy_deg: float = ORBIT_FOVY_DEG
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    depth: bool = False
    """Also write the depth turntable (grey, near = dark) as <output>_depth."""
    fps: int = 15
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: str = "auto"


def cmd_render(argv: list[str]) -> None:
    from .io.media import save_png, save_video
    from .io.ply import load_splats, resolve_ply
    from .render.turntable import depth_to_rgb, render_turntable

    args = tyro.cli(RenderArgs, args=argv, prog="esd-gs render")
    if args.frames <= 0 or args.resolution < 8:
        raise UserError(f"--frames must be positive and --resolution >= 8 (got {args.frames}, {args.resolution})")
    splats = load_splats(args.path, args.device)
    out = args.output or resolve_ply(args.path).parent / f"turntable_render.{args.format}"
    rgb, depth, alpha = render_turntable(splats, args.frames, args.resolution, args.elevation_deg, args.radius,
                                         args.fovy_deg, args.background, args.backend)
    videos = [(out, rgb)]
    if args.depth:
        videos.append((out.with_name(out.stem + "_depth" + out.suffix), depth_to_rgb(depth, alpha, args.background)))
    for path, frames in videos:
        if args.format == "png":
            for i, frame in enumerate(frames):
                save_png(path / f"frame_{i:04d}.png", frame)
        elif not save_video(path, frames, fps=args.fps):
            raise UserError(f"could not write {path}: no usable ffmpeg (pip install imageio-ffmpeg) - try --format gif")
        print(f"wrote {path} ({args.frames} frames, {args.resolution}x{args.resolution})")


@dataclass
class ViewArgs:
    """Open a PLY or run folder in the browser (viser): orbit with the mouse, renders by esd-gs."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    host: str = "127.0.0.1"
    """0.0.0.0 to reach it from other machines (or forward the port over ssh)."""
    port: int = 8080
    max_resolution: int = 512
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: str = "auto"


def cmd_view(argv: list[str]) -> None:
    import time

    from .io.ply import load_splats
    from .viewer import Viewer

    args = tyro.cli(ViewArgs, args=argv, prog="esd-gs view")
    splats = load_splats(args.path, args.device)
    try:
        viewer = Viewer(splats, args.host, args.port, args.max_resolution, args.backend)
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror} (try --port)")
    print(f"viewer on http://{'localhost' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{viewer.port}"
          " (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    finally:
        viewer.stop()


@dataclass
class ExportArgs:
    """Export a PLY or run folder: a vertex-coloured mesh (TSDF fusion of rendered RGB-D), a .splat file
    for web viewers, an SH-truncated PLY or SuperSplat's compressed PLY."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    mesh: Path | None = None
    """Write a triangle mesh here (.ply, .obj, .glb)."""
    splat: Path | None = None
    """Write antimatter15's .splat format here (gsplat's exporter)."""
    ply: Path | None = None
    """Write the splats again as PLY here (with --sh-degree, --compressed)."""
    sh_degree: int | None = None
    """Keep SH bands up to this degree in --ply / --splat (default: all)."""
    compressed: bool = False
    """--ply in SuperSplat's compressed layout."""
    mesh_options: tyro.conf.OmitArgPrefixes[MeshConfig] = dataclasses.field(default_factory=MeshConfig)
    device: str = "auto"


def cmd_export(argv: list[str]) -> None:
    from gsplat import export_splats

    from .gaussians import truncate_sh
    from .io.atomic import atomic_path
    from .io.ply import load_splats, write_ply
    from .mesh import splats_to_mesh, write_mesh

    args = tyro.cli(ExportArgs, args=argv, prog="esd-gs export")
    if not (args.mesh or args.splat or args.ply):
        raise UserError("nothing to export: pass --mesh OUT.ply|.obj|.glb, --splat OUT.splat or --ply OUT.ply")
    splats = load_splats(args.path, args.device)
    if args.splat or args.ply:
        kept = truncate_sh(splats, args.sh_degree)
        n = len(kept["means"])
        if args.ply and not args.compressed:
            write_ply(args.ply, kept)
            print(f"wrote {args.ply} ({n} Gaussians)")
        for target, fmt in ((args.splat, "splat"), (args.ply if args.compressed else None, "ply_compressed")):
            if target:
                with atomic_path(target) as tmp:
                    export_splats(*(kept[k].detach().cpu() for k in ("means", "scales", "quats", "opacities", "sh0",
                                                                      "shN")), format=fmt, save_to=str(tmp))
                print(f"wrote {target} ({n} Gaussians, {fmt})")
    if args.mesh:
        mesh = splats_to_mesh(splats, args.mesh_options)
        write_mesh(args.mesh, mesh)
        print(f"wrote {args.mesh} ({len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles)")


def cmd_bench(argv: list[str]) -> None:
    from .bench import RasterArgs, StepArgs, bench_raster, bench_step, print_result

    kinds = {"raster": (RasterArgs, bench_raster), "step": (StepArgs, bench_step)}
    if not argv or argv[0] not in kinds:
        raise UserError("usage: esd-gs bench {raster,step} [--json] ... (see esd-gs bench raster --help)")
    Args, run = kinds[argv[0]]
    args = tyro.cli(Args, args=argv[1:], prog=f"esd-gs bench {argv[0]}")
    print_result(run(args), args.json)


COMMANDS = {"train": cmd_train, "janus": cmd_janus, "render": cmd_render, "view": cmd_view, "export": cmd_export,
            "bench": cmd_bench}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"esd-gs: error: unknown command '{argv[0]}'\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    try:
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f"esd-gs: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("esd-gs: interrupted (the last checkpoint is kept; continue with --resume)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
