"""What a run shows while it trains and leaves when it ends: preview grids, the live viewer, the turntable,
the world's report and splats.ply."""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..core.cameras import VIEW_ELEVATION_DEG, Cameras, make_cameras
from ..io.media import grid, save_png, save_video
from ..io.ply import write_ply
from ..render import render_frames
from ..render.turntable import render_turntable

SPLATS_PLY_UP = "-y"  # INRIA/COLMAP's frame: upright in SuperSplat, which the README names (esd-gs reads it back)


def preview_cameras(trainer, resolution: int) -> Cameras:
    """Front, left, back, right."""
    radius, fovy = trainer.world.orbit()
    return make_cameras(torch.tensor([0.0, 90.0, 180.0, -90.0]), VIEW_ELEVATION_DEG, radius, fovy, resolution)


def save_preview(trainer) -> None:
    res = trainer.cfg.render.resolution
    views, _, _ = render_frames(trainer.splats, preview_cameras(trainer, res), backend=trainer.cfg.render.backend,
                                depth=False)
    save_png(trainer.run_dir / "previews" / f"step_{trainer.step:06d}.png", grid(views, upscale=max(1, 128 // res)))


def finish(trainer) -> dict:
    """The final checkpoint, preview, turntable and the world's report, then splats.ply: written last, it
    marks the run finished (esd-gs batch reuses runs that have one), so a run killed in here is finished again
    by --resume."""
    trainer.save_checkpoint()
    save_preview(trainer)
    log = trainer.cfg.log
    if log.turntable_frames:
        radius, fovy = trainer.world.orbit()
        frames, _, _ = render_turntable(trainer.splats, log.turntable_frames, log.turntable_resolution, radius=radius,
                                        fovy_deg=fovy, backend=trainer.cfg.render.backend, depth=False)
        save_video(trainer.run_dir / "turntable.gif", frames)
        save_video(trainer.run_dir / "turntable.mp4", frames)
    report = trainer.world.evaluate(trainer.splats, trainer.run_dir)
    write_ply(trainer.run_dir / "splats.ply", trainer.splats, up=SPLATS_PLY_UP)
    return {"run_dir": str(trainer.run_dir), "steps": trainer.step, "skipped_steps": trainer.skipped_steps,
            "n_gaussians": len(trainer.splats["means"]), **report}


def start_viewer(trainer):
    """The live viewer of --viewer (viser, in a process of its own), framed on the current splats; its address
    is printed."""
    from .viewer import LiveViewer

    # 256 px (the browser's slider goes higher): the renders share the machine with training
    viewer = LiveViewer(trainer.splats, port=trainer.cfg.viewer_port, max_resolution=256,
                        backend=trainer.cfg.render.backend)
    tqdm.write(f"viewer on http://localhost:{viewer.port} (training pauses from its button)")
    return viewer


def show_step(viewer, trainer, loss) -> None:
    cfg = trainer.cfg
    if trainer.step % cfg.viewer_every == 0 or trainer.step >= cfg.steps:
        viewer.update(trainer.splats, f"step {trainer.step} of {cfg.steps} · loss {float(loss):.4g} · "
                      f"{len(trainer.splats['means']):,} Gaussians")
