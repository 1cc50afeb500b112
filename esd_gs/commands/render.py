"""`esd-gs render` (turntables: GIF, MP4, PNG frames, depth) and `esd-gs view` (the browser viewer)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG
from ..errors import UserError
from .args import check_orbit, check_turntable, parse


@dataclass
class RenderArgs:
    """Turntable of a PLY or run folder: GIF, MP4 or a folder of PNG frames; RGB and optionally depth."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    output: Path | None = None
    """File (.gif/.mp4) or folder (png); default: turntable_render.<format> next to the PLY."""
    format: Literal["gif", "mp4", "png"] = "gif"
    fps: int = 15
    """Frames a second of the GIF or MP4."""
    depth: bool = False
    """Also write the depth turntable (grey, near = dark) as <output>_depth."""
    frames: int = 36
    """Views round the orbit, evenly spaced in azimuth."""
    resolution: int = 256
    """Square images of this many pixels a side."""
    elevation_deg: float = VIEW_ELEVATION_DEG
    """Camera elevation in degrees above the horizontal (default: the orbit of previews and turntables)."""
    radius: float = ORBIT_RADIUS
    """Camera distance from the centre."""
    fovy_deg: float = ORBIT_FOVY_DEG
    """Vertical field of view."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1] behind the splats."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """Rasterizer (auto: gsplat on CUDA, ours on CPU)."""
    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""


def cmd_render(argv: list[str]) -> None:
    from ..io.atomic import check_output_file
    from ..io.media import save_png, save_video
    from ..io.ply import load_splats, resolve_ply
    from ..render.turntable import depth_to_rgb, render_turntable

    args = parse(RenderArgs, argv, "esd-gs render")
    check_turntable("--frames", args.frames, args.resolution)
    check_orbit(args.radius, args.fovy_deg)
    if args.fps < 1:
        raise UserError(f"--fps must be at least 1 (got {args.fps})")
    out = args.output or resolve_ply(args.path).parent / f"turntable_render.{args.format}"
    if args.format == "png" and out.exists() and not out.is_dir():
        raise UserError(f"--format png writes a folder of frames, but {out} is a file")
    if args.format != "png":
        check_output_file(out)
    splats = load_splats(args.path, args.device)
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
    import signal
    import time

    from ..io.ply import load_splats
    from ..run.viewer import Viewer

    args = parse(ViewArgs, argv, "esd-gs view")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535 (got {args.port}; 0 picks a free one)")
    splats = load_splats(args.path, args.device)
    try:
        viewer = Viewer(splats, args.host, args.port, args.max_resolution, args.backend)
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror} (try --port)")
    # Ctrl-C must reach this loop even when the parent started us with SIGINT ignored or a library
    # swapped the handler while the viewer started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print(f"viewer on http://{'localhost' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{viewer.port}"
              " (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("viewer stopped", file=sys.stderr)
    finally:
        viewer.stop()
