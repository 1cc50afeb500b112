"""What `esd-gs train --viewer` costs: the demo preset's step time with the live viewer off, and on with a
browser-like client connected (tests/viser_client.py: it reports a 512x512 view, so every update is
re-rendered at the live viewer's resolution cap, 256), on the same seed, alternating runs.

    python benchmarks/viewer_overhead.py --steps 200 --repeats 1
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import tyro

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


@dataclass
class Args:
    steps: int = 120
    repeats: int = 2
    viewer_every: int = 50
    skip: int = 20
    """Steps left out of the mean (the first ones include start-up)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_seconds(run_dir: Path, skip: int) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(1.0 / r["it_s"] for r in rows if r["step"] > skip)


def one_run(args: Args, out: Path, name: str, viewer: bool) -> float:
    from esd_gs.commands.args import train_from_args
    from viser_client import ViserClient

    port = free_port()
    argv = ["--preset", "demo", "--steps", str(args.steps), "--output-dir", str(out), "--run-name", name,
            "--log.preview-every", "0", "--log.turntable-frames", "0", "--log.no-progress"]
    if viewer:
        argv += ["--viewer", "--viewer-port", str(port), "--viewer-every", str(args.viewer_every)]
    thread = threading.Thread(target=train_from_args, args=(argv,), kwargs={"quiet": True})
    thread.start()
    client = ViserClient(port, size=512) if viewer else None
    thread.join()
    if client:
        images = len(client.of_type("BackgroundImageMessage"))
        client.close()
        print(f"  {name}: the client received {images} renders", flush=True)
    return step_seconds(out / name, args.skip)


def main() -> None:
    args = tyro.cli(Args)
    times = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in ("off", "on"):
                times[mode].append(one_run(args, Path(tmp), f"{mode}{i}", mode == "on"))
                print(f"viewer {mode}, run {i}: {times[mode][-1] * 1000:.0f} ms a step", flush=True)
    off, on = statistics.mean(times["off"]), statistics.mean(times["on"])
    print(json.dumps({"steps": args.steps, "repeats": args.repeats, "viewer_every": args.viewer_every,
                      "off_ms": round(off * 1000, 1), "on_ms": round(on * 1000, 1),
                      "overhead": round(on / off - 1, 3)}))


if __name__ == "__main__":
    main()
