"""Issue 27's interop check in browsers: each format esd-gs exports, opened by each of three web splat viewers
in headless Chromium, against our own render of the same splats from the same camera.

Viewers (npm, pinned in benchmarks/interop/browser/package.json; pages in browser/pages/): gsplat.js 1.2.9,
@mkkellogg/gaussian-splats-3d 0.4.7 (three.js), the PlayCanvas engine 2.23.3 (SuperSplat's). Browser: Debian's
`chromium`, WebGL through SwiftShader (no GPU), driven by playwright-core (browser/shoot.mjs).

For each (format, viewer) pair the report gives the splats the viewer loaded (against the file's) and the
mean absolute pixel difference to our render (0-255, RGB, over the whole w x h image and over the object's
pixels: those not white in either image), per view. A pair that cannot work says why.

Then each viewer's default view of each format (the files as `esd-gs export` writes them by default): its own
camera convention (DEFAULT_VIEWS: which way it looks, which way is up; SuperSplat's turn of PLY files), at
our orbit's distance, into OUT/default_views.png and, with --picture, docs/images/interop.png: a row a viewer,
a column a format, our render of the head's front on the left. Upright is what the format's frame promises
(glTF and SPZ by specification; PLY and .splat by the INRIA/COLMAP convention that SuperSplat follows).

    python benchmarks/interop/browser_check.py RUN_OR_PLY [--out-dir DIR] [--resolution 256] [--install]
        [--viewers ...] [--formats ...] [--models sh0 sh3] [--repeats N] [--delivery paced|whole]

--install first runs `apt-get install -y chromium` (as root) and `npm install` in browser/ if missing.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

import imageio.v3 as iio
import numpy as np
import torch
import tyro

from esd_gs.core.cameras import make_cameras
from esd_gs.core.gaussians import sh_degree_of, truncate_sh
from esd_gs.io.orient import UP_ROTATIONS, quat_from_matrix
from esd_gs.io.ply import load_splats, resolve_ply, write_ply
from esd_gs.render import render_frames
from esd_gs.synthetic.config import SyntheticConfig

BROWSER = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# format -> (export flags, the file's up axis: esd-gs export's default for it)
FORMATS = {
    "ply": ([], "-y"),
    "compressed-ply": (["--compressed"], "-y"),
    "splat": ([], "-y"),
    "glb": ([], "y"),
    "spz": ([], "y"),
}
# what a viewer cannot read, and why (every other pair is checked)
CANNOT = {
    ("gsplat.js", "compressed-ply"): "no loader for it (gsplat.js 1.2.9 reads .ply and .splat)",
    ("gsplat.js", "glb"): "no loader for it (gsplat.js 1.2.9 reads .ply and .splat)",
    ("gsplat.js", "spz"): "no loader for it (gsplat.js 1.2.9 reads .ply and .splat)",
    ("mkkellogg", "glb"): "no glTF loader in the viewer",
    ("mkkellogg", "spz"): "its loader refuses SPZ versions other than 1-2; esd-gs writes version 3 (the current "
                          "specification; gsply writes 3 and 4 only)",
    ("playcanvas", "splat"): "no loader for antimatter15's .splat in the engine",
    ("playcanvas", "spz"): "no SPZ loader in the engine (SuperSplat converts SPZ with splat-transform first)",
}
MAX_SH = {"gsplat.js": 0, "mkkellogg": 2, "playcanvas": 3}  # the degree each viewer draws: ours is cut to it
# each viewer's default camera, in its world frame: where it looks from (a direction; placed at our orbit's
# distance), its up vector; `turn`: degrees about z the app turns a PLY-family file when it loads it
DEFAULT_VIEWS = {
    "gsplat.js": {"from": (0.0, 0.0, -1.0), "up": (0.0, -1.0, 0.0)},  # Camera(): OpenCV axes, looks along +z
    "mkkellogg": {"from": (0.0, 10.0, 15.0), "up": (0.0, 1.0, 0.0)},  # Viewer(): [0, 10, 15], cameraUp [0, 1, 0]
    "playcanvas": {"from": (0.0, 0.0, 1.0), "up": (0.0, 1.0, 0.0), "turn": 180.0},  # SuperSplat: y up, from +z; it
}   # turns a loaded PLY 180 deg about z (3DGS files are y-down)
PICTURE = Path(__file__).resolve().parents[2] / "docs" / "images" / "interop.png"
PAGES = {"gsplat.js": "gsplat.html", "mkkellogg": "mkkellogg.html", "playcanvas": "playcanvas.html"}


@dataclass
class Args:
    path: tyro.conf.Positional[Path]
    """Run folder or PLY."""
    out_dir: Path = Path("outputs/interop")
    resolution: int = 256
    azimuths: list[float] = field(default_factory=lambda: [30.0, 160.0])
    elevation: float = 15.0
    install: bool = False
    viewers: list[Literal["gsplat.js", "mkkellogg", "playcanvas"]] = field(default_factory=lambda: list(PAGES))
    formats: list[Literal["ply", "compressed-ply", "splat", "glb", "spz"]] = field(
        default_factory=lambda: list(FORMATS))
    models: list[Literal["sh0", "sh3"]] = field(default_factory=lambda: ["sh0", "sh3"])
    """sh0: the splats cut to degree 0; sh3: with seeded degree-3 bands."""
    repeats: int = 1
    """Page loads of each file per view (each in a fresh browser context)."""
    picture: bool = False
    """Also write the default views' grid to docs/images/interop.png."""
    delivery: Literal["paced", "whole"] = "paced"
    """How the test server sends a file: `paced` in 16 KiB pieces 10 ms apart, as a network delivers a file
    of more than a few KiB (several reads for the page); `whole` at once, which on localhost can reach the
    page in a single read (mkkellogg 0.4.7 then parses no splat of a compressed PLY: docs/benchmarks.md)."""


def install() -> None:
    if not Path(CHROMIUM).exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    if not (BROWSER / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "install", "-s", "--no-audit", "--no-fund"], cwd=BROWSER, check=True)


def with_sh3(splats: dict) -> dict:
    """The splats with degree-3 SH bands (seeded, a strong view dependence) where they have fewer."""
    n = len(splats["means"])
    if splats["shN"].shape[1] == 15:
        return splats
    g = torch.Generator().manual_seed(0)
    return {**splats, "shN": 0.15 * torch.randn(n, 15, 3, generator=g)}


def export(ply: Path, name: str, folder: Path) -> Path:
    flags, up = FORMATS[name]
    suffix = {"compressed-ply": ".ply"}.get(name, "." + name)
    out = folder / f"{ply.stem}-{name}{suffix}"
    kind = "--ply" if name.endswith("ply") else f"--{name}"
    r = subprocess.run([sys.executable, "-m", "esd_gs.cli", "export", str(ply), kind, str(out), "--up", up, *flags],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"export {name} failed: {r.stderr.strip()}")
    return out


def camera_query(cams, i: int, up: str) -> dict:
    """The camera in the file's frame (file = R @ ours) in each page's terms."""
    rot = UP_ROTATIONS[up].double()
    c2w = cams.c2w[i].double()
    r = rot @ c2w[:3, :3]  # camera axes (OpenCV: x right, y down, z forward) in the file's frame
    pos = rot @ c2w[:3, 3]
    fmt = lambda v: ",".join(f"{float(x):.7f}" for x in v)  # noqa: E731
    return {"pos": fmt(pos), "quat": fmt(quat_from_matrix(r)), "up": fmt(-r[:, 1]), "target": fmt(pos + r[:, 2]),
            "fx": f"{float(cams.Ks[i, 0, 0]):.5f}", "fy": f"{float(cams.Ks[i, 1, 1]):.5f}",
            "fovy": f"{float(cams.fovy_deg[i]):.5f}", "w": cams.width, "h": cams.height}


def default_query(viewer: str, fmt: str, distance: float, fovy: float, size: int) -> dict:
    """The page's camera for a viewer's default view (DEFAULT_VIEWS), in the page's terms."""
    view = DEFAULT_VIEWS[viewer]
    forward = -torch.nn.functional.normalize(torch.tensor(view["from"], dtype=torch.float64), dim=0)
    up = torch.tensor(view["up"], dtype=torch.float64)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, -up), dim=0)  # OpenCV: x right, y down
    r = torch.stack([right, torch.linalg.cross(forward, right), forward], dim=1)
    pos = -forward * distance
    focal = 0.5 * size / math.tan(math.radians(fovy) / 2)
    fmt_ = lambda v: ",".join(f"{float(x):.7f}" for x in v)  # noqa: E731
    query = {"pos": fmt_(pos), "quat": fmt_(quat_from_matrix(r)), "up": fmt_(up), "target": fmt_(torch.zeros(3)),
             "fx": f"{focal:.5f}", "fy": f"{focal:.5f}", "fovy": f"{fovy:.5f}", "w": size, "h": size}
    if "turn" in view and fmt in ("ply", "compressed-ply"):
        query["turn"] = view["turn"]
    return query


def default_views_picture(shots: dict, ours: np.ndarray, formats: list[str], viewers: list[str],
                          size: int) -> np.ndarray:
    """Rows: viewers; columns: our render of the front, then each format (grey where the viewer cannot read it)."""
    from PIL import Image, ImageDraw

    label = 18
    sheet = Image.new("RGB", ((len(formats) + 1) * size, label + len(viewers) * (size + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(["esd-gs (front)", *formats]):
        draw.text((j * size + 4, 3), name, fill=(0, 0, 0))
    for i, viewer in enumerate(viewers):
        y = label + i * (size + label)
        draw.text((4, y + 2), viewer, fill=(0, 0, 0))
        sheet.paste(Image.fromarray(ours), (0, y + label))
        for j, fmt in enumerate(formats, start=1):
            image = shots.get((viewer, fmt))
            if image is None:
                draw.rectangle([j * size, y + label, (j + 1) * size - 1, y + label + size - 1], fill=(225, 225, 225))
                draw.text((j * size + 4, y + label + size // 2), "cannot read", fill=(90, 90, 90))
            else:
                sheet.paste(Image.fromarray(image), (j * size, y + label))
    return np.asarray(sheet)


def serve(root: Path, paced: bool) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source, outputfile):
            if not paced:
                return super().copyfile(source, outputfile)
            while piece := source.read(16384):
                outputfile.write(piece)
                outputfile.flush()
                time.sleep(0.01)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def differences(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    object_pixels = (ours < 250).any(-1) | (theirs < 250).any(-1)
    return float(diff.mean()), float(diff[object_pixels].mean()) if object_pixels.any() else 0.0


def main() -> None:
    args = tyro.cli(Args)
    if args.install:
        install()
    if not Path(CHROMIUM).exists() or not (BROWSER / "node_modules").is_dir():
        raise SystemExit("needs Debian's chromium and the viewers: run with --install (apt-get, npm)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = SyntheticConfig()
    cams = make_cameras(torch.tensor(args.azimuths), torch.full((len(args.azimuths),), args.elevation), cfg.radius,
                        cfg.fovy_deg, args.resolution)
    source = {k: v.detach() for k, v in load_splats(resolve_ply(args.path), "cpu").items()}
    models = {k: truncate_sh(source, 0) if k == "sh0" else with_sh3(source) for k in args.models}
    root = Path(tempfile.mkdtemp(prefix="interop-"))
    try:
        for name in ("pages", "node_modules"):
            os.symlink(BROWSER / name, root / name)
        files = root / "files"
        files.mkdir()
        jobs, cases = [], []
        for model, splats in models.items():
            ply = files / f"{model}.ply"
            write_ply(ply, splats)
            ours = {}  # our render at each viewer's SH degree
            for degree in sorted(set(MAX_SH.values())):
                drawn = truncate_sh(splats, min(degree, sh_degree_of(splats)))
                rgb = render_frames(drawn, cams, (1.0, 1.0, 1.0))[0].clamp(0, 1)
                ours[degree] = (rgb.numpy() * 255).round().astype(np.uint8)
            for fmt in args.formats:
                if model == "sh3" and fmt not in ("compressed-ply", "ply"):
                    continue  # degree 3 is asked of the compressed PLY; the plain PLY carries it too
                path = export(ply, fmt, files)
                for viewer in args.viewers:
                    if (viewer, fmt) in CANNOT:
                        cases.append({"model": model, "format": fmt, "viewer": viewer,
                                      "why_not": CANNOT[viewer, fmt]})
                        continue
                    for i, repeat in ((i, r) for i in range(len(cams)) for r in range(args.repeats)):
                        query = {"file": f"../files/{path.name}", **camera_query(cams, i, FORMATS[fmt][1])}
                        out = args.out_dir / f"{model}_{fmt}_{viewer}_{i}{f'_{repeat}' if repeat else ''}.png"
                        jobs.append({"url": f"/pages/{PAGES[viewer]}?{urlencode(query)}", "out": str(out.resolve()),
                                     "w": cams.width, "h": cams.height, "timeout_ms": 90000})
                        cases.append({"model": model, "format": fmt, "viewer": viewer, "view": i, "out": out,
                                      "ours": ours[MAX_SH[viewer]][i], "splats": len(splats["means"])})
        defaults = {}  # (viewer, format): screenshot path of its default view (the sh0 files)
        if "sh0" in models:
            for fmt in args.formats:
                path = files / f"sh0-{fmt}{'.ply' if fmt.endswith('ply') else '.' + fmt}"
                for viewer in args.viewers:
                    if (viewer, fmt) in CANNOT:
                        continue
                    out = (args.out_dir / f"default_{fmt}_{viewer}.png").resolve()
                    query = {"file": f"../files/{path.name}",
                             **default_query(viewer, fmt, cfg.radius, cfg.fovy_deg, args.resolution)}
                    jobs.append({"url": f"/pages/{PAGES[viewer]}?{urlencode(query)}", "out": str(out),
                                 "w": args.resolution, "h": args.resolution, "timeout_ms": 90000})
                    defaults[viewer, fmt] = out
        server = serve(root, args.delivery == "paced")
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for job in jobs:
            job["url"] = base + job["url"]
        shot = subprocess.run(["node", "shoot.mjs"], input=json.dumps(jobs), cwd=BROWSER, capture_output=True,
                              text=True, env={**os.environ, "CHROMIUM": CHROMIUM})
        results = {r["out"]: r for r in map(json.loads, shot.stdout.splitlines())}
        if shot.returncode:
            print(shot.stderr[-3000:], file=sys.stderr)
        server.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    for case in cases:
        row = {k: case[k] for k in ("model", "format", "viewer")}
        if "why_not" in case:
            rows.append({**row, "why_not": case["why_not"]})
            continue
        result = results.get(str(case["out"].resolve()), {"error": "no screenshot"})
        row.update(view=case["view"], splats=case["splats"], loaded=result.get("loaded"),
                   seconds=result.get("seconds"), error=result.get("error"), console=result.get("logs"))
        if not result.get("error"):
            theirs = iio.imread(case["out"])[..., :3]
            row["mean_diff"], row["object_mean_diff"] = differences(case["ours"], theirs)
            iio.imwrite(case["out"], np.concatenate([case["ours"], theirs], axis=1))  # ours | theirs
        rows.append(row)
    shots = {key: iio.imread(out)[..., :3] for key, out in defaults.items()
             if out.exists() and not results.get(str(out), {}).get("error")}
    if defaults:
        front = make_cameras(torch.tensor([0.0]), torch.tensor([args.elevation]), cfg.radius, cfg.fovy_deg,
                             args.resolution)
        ours = (render_frames(models["sh0"], front, (1.0, 1.0, 1.0))[0][0].clamp(0, 1).numpy() * 255).round()
        picture = default_views_picture(shots, ours.astype(np.uint8), args.formats, args.viewers, args.resolution)
        iio.imwrite(args.out_dir / "default_views.png", picture)
        if args.picture:
            iio.imwrite(PICTURE, picture)
        for key, out in defaults.items():
            rows.append({"viewer": key[0], "format": key[1], "default_view": str(out),
                         "error": results.get(str(out), {}).get("error")})
    (args.out_dir / "report.json").write_text(json.dumps(rows, indent=1))
    print("| model | format | viewer | splats loaded | mean diff (0-255), views | on the object | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    compared = [r for r in rows if "model" in r]
    for key in dict.fromkeys((r["model"], r["format"], r["viewer"]) for r in compared):  # rows in table order
        group = [r for r in compared if (r["model"], r["format"], r["viewer"]) == key]
        if "why_not" in group[0]:
            print(f"| {' | '.join(key)} | - | - | - | {group[0]['why_not']} |")
            continue
        errors = [r["error"] for r in group if r.get("error")]
        if errors:
            print(f"| {' | '.join(key)} | - | - | - | error: {errors[0][:100]} |")
            continue
        loaded = {r["loaded"] for r in group}
        diffs = [r["mean_diff"] for r in group]
        ok = loaded == {group[0]["splats"]} and max(diffs) <= 5.0
        on_object = ", ".join(f"{r['object_mean_diff']:.1f}" for r in group)
        print(f"| {' | '.join(key)} | {'/'.join(map(str, loaded))} of {group[0]['splats']} | "
              f"{', '.join(f'{d:.2f}' for d in diffs)} | {on_object} | {'ok' if ok else 'NOT ok'} |")


if __name__ == "__main__":
    main()
