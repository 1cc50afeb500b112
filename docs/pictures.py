#!/usr/bin/env python
"""Makes the README's pictures from a finished synthetic-world run (needs Debian's chromium for the
two browser screenshots: `apt-get install chromium`).

    python docs/pictures.py outputs/a-head-esd1to0.5-s0      # after make demo

docs/images/preview.png    the run's last preview grid (front, left, back, right)
docs/images/turntable.png  turntable frames of the run above the ground-truth head's
docs/images/viewer.png     `esd-gs view` in headless Chromium
docs/images/mesh.png       `esd-gs export --mesh` of the ground truth (left) and of the run (right), in viser
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from esd_gs.io.media import grid, save_png
from esd_gs.io.ply import load_splats
from esd_gs.io.mesh import MeshConfig, splats_to_mesh
from esd_gs.render.turntable import render_turntable
from esd_gs.synthetic.head import head_splats
from esd_gs.commands.viewer import Viewer

OUT = Path(__file__).resolve().parent / "images"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=900,600", "--virtual-time-budget=20000"]


def screenshot(url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)


def main(run_dir: Path) -> None:
    OUT.mkdir(exist_ok=True)
    shutil.copy(sorted((run_dir / "previews").glob("*.png"))[-1], OUT / "preview.png")

    splats, truth = load_splats(run_dir, "cpu"), head_splats()
    rows = [render_turntable(s, frames=8, resolution=96, depth=False)[0] for s in (splats, truth)]
    save_png(OUT / "turntable.png", grid(torch.cat(rows), cols=8))
    if shutil.which("chromium") is None:
        print("no chromium: kept the viewer and mesh screenshots as they were (apt-get install chromium)")
        return

    viewer = Viewer(splats, port=8731)
    time.sleep(1.0)
    # headless Chromium shoots before the server's initial pose reaches the client: pass it in the URL too
    position, look_at = (",".join(f"{x:.4f}" for x in v) for v in (viewer.server.initial_camera.position,
                                                                    viewer.server.initial_camera.look_at))
    screenshot(f"http://127.0.0.1:{viewer.port}/?initialCameraPosition={position}&initialCameraLookAt={look_at}",
               OUT / "viewer.png")
    viewer.stop()

    import trimesh
    import viser

    server = viser.ViserServer(port=8732, verbose=False)
    server.scene.set_up_direction("+z")
    server.initial_camera.position, server.initial_camera.look_at = (2.2, 0.0, 0.7), (0.0, 0.0, 0.0)
    for name, s, y in (("truth", truth, -0.45), ("run", splats, 0.45)):
        mesh = splats_to_mesh(s, MeshConfig(views=48, resolution=192, target_triangles=20000))
        colours = (np.asarray(mesh.vertex_colors) * 255).round().astype(np.uint8)
        server.scene.add_mesh_trimesh(name, trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles),
                                                            vertex_colors=colours, process=False),
                                      position=(0.0, y, 0.0))
    time.sleep(1.0)
    screenshot(f"http://127.0.0.1:{server.get_port()}/", OUT / "mesh.png")
    server.stop()
    print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('*.png')))} in {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    main(Path(sys.argv[1]))
