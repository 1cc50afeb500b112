#!/usr/bin/env python
"""Gaussian-splat PLY (or run folder) -> vertex-coloured triangle mesh (.ply / .obj / .glb).

    python tools/ply_to_mesh.py outputs/a-head-esd0.5-s0 head.glb [--voxel-size 0.006 --views 96 ...]

Same as `esd-gs export RUN --mesh head.glb`: renders RGB-D from views all around the object, fuses
them with open3d's TSDF integration, keeps the largest connected piece (no floaters) and optionally
decimates (--target-triangles). `--help` lists every option.
"""

import sys

from esd_gs.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1].startswith("-") or sys.argv[2].startswith("-"):
        print(__doc__)
        sys.exit(0 if any(a in ("-h", "--help") for a in sys.argv[1:]) else 2)
    main(["export", sys.argv[1], "--mesh", sys.argv[2], *sys.argv[3:]])
