"""Interactive viewer: a viser server whose browser camera is rendered through our `render()`.

As in nerfstudio's and gsplat's viewers, the browser does the orbit controls and we send back an image
of the splats for its current camera (viser's camera frame is OpenCV's, like ours). A background
thread re-renders for every client whose camera, image size or view settings changed.

While training (`esd-gs train --viewer`) a `LiveViewer` runs the viewer in a process of its own (its server,
JPEG encoding and renders off the training process, which shares the machine's cores with it) and sends it
a copy of the splats every few steps, which re-renders every client's view and shows the step, loss and
Gaussian count; a button pauses training between steps (`LiveViewer.wait_while_paused`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import threading

import numpy as np
import torch
from torch import Tensor

from ..core.cameras import Cameras, intrinsics
from ..errors import UserError
from ..io.media import to_uint8
from ..render import render_frames
from ..render.turntable import depth_to_rgb


def camera_from_pose(wxyz, position, fovy_rad: float, width: int, height: int) -> Cameras:
    """Camera-to-world pose (quaternion wxyz, position) in OpenCV axes -> our Cameras."""
    import viser.transforms as vtf

    c2w = torch.eye(4, dtype=torch.float32)
    c2w[:3, :3] = torch.from_numpy(vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()).float()
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float32))
    x, y, z = c2w[:3, 3].tolist()
    radius = math.sqrt(x * x + y * y + z * z)
    fovy = torch.tensor([math.degrees(fovy_rad)])
    return Cameras(torch.linalg.inv(c2w)[None], intrinsics(fovy, width, height), width, height,
                   torch.tensor([math.degrees(math.atan2(y, x))]),
                   torch.tensor([math.degrees(math.asin(z / max(radius, 1e-9)))]), torch.tensor([radius]), fovy,
                   c2w[None])


def render_image(splats, cams: Cameras, mode: str = "rgb", background=(1.0, 1.0, 1.0), backend="auto") -> np.ndarray:
    """One view as uint8 [H,W,3]: the RGB render or its depth in grey."""
    rgb, depth, alpha = render_frames(splats, cams, background, backend, depth=mode == "depth")
    return to_uint8((rgb if mode == "rgb" else depth_to_rgb(depth, alpha, background))[0])


def framing_pose(means: Tensor, opacities: Tensor, fovy_rad: float, fill: float = 0.6,
                 direction=(1.6, 0.6, 0.6)) -> tuple[np.ndarray, np.ndarray]:
    """(camera position, look-at) that puts the object in the middle of the view, its bounding sphere
    spanning `fill` of the view's vertical angle: like splat viewers' framing on load. The sphere is centred on
    the median of the visible splats (opacity >= 0.1) and holds 95% of them, so stray floaters do not
    shrink the object to a dot."""
    keep = opacities.sigmoid() >= 0.1
    visible = means[keep] if keep.any() else means
    center = visible.median(dim=0).values
    radius = float(torch.quantile((visible - center).norm(dim=-1), 0.95).clamp_min(1e-3))
    distance = radius / math.sin(fill * fovy_rad / 2)
    unit = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    center = center.double().numpy()
    return center + distance * unit, center


class Viewer:
    """Serves `splats` on http://host:port until `stop()`; `paused` (an Event of threading or
    multiprocessing) adds the pause button of a live view, which sets and clears it."""

    def __init__(self, splats, host: str = "127.0.0.1", port: int = 8080, max_resolution: int = 512,
                 backend: str = "auto", paused=None):
        import viser

        self.splats, self.backend = splats, backend
        # a first render compiles/loads the kernels now, not while the first browser waits
        render_image(splats, camera_from_pose((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -2.0), 0.8, 16, 16), backend=backend)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.server.scene.set_up_direction("+z")
        position, look_at = framing_pose(splats["means"].detach().cpu(), splats["opacities"].detach().cpu(),
                                         self.server.initial_camera.fov)
        self.server.initial_camera.position = tuple(position)
        self.server.initial_camera.look_at = tuple(look_at)
        gui = self.server.gui
        self.resolution = gui.add_slider("Max resolution", min=64, max=1024, step=32, initial_value=max_resolution)
        self.mode = gui.add_dropdown("Show", options=("rgb", "depth"), initial_value="rgb")
        self.status = gui.add_markdown(f"{len(splats['means']):,} Gaussians")
        self.paused = paused
        if paused is not None:
            self.pause_button = gui.add_button("Pause training")
            self.pause_button.on_click(lambda _: self._toggle_pause())
        self._sent: dict[int, tuple] = {}
        self._version = 0  # of the splats shown: bumped by update()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server.get_port()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for client_id, client in list(self.server.get_clients().items()):
                cam = client.camera
                scale = self.resolution.value / max(cam.image_width or 1, cam.image_height or 1, 1)
                width = max(16, int((cam.image_width or self.resolution.value) * min(scale, 1.0)))
                height = max(16, int(width / max(cam.aspect, 1e-3)))
                version, splats = self._version, self.splats  # in this order: update() sets them in reverse
                key = (tuple(cam.wxyz), tuple(cam.position), cam.fov, width, height, self.mode.value, version)
                if self._sent.get(client_id) == key:
                    continue
                cams = camera_from_pose(cam.wxyz, cam.position, cam.fov, width, height)
                image = render_image(splats, cams, self.mode.value, backend=self.backend)
                client.scene.set_background_image(image, format="jpeg")
                self._sent[client_id] = key
            self._stop.wait(0.02)

    def update(self, splats, status: str) -> None:
        """Show a copy of these splats (training goes on changing the originals) and this status line."""
        self.splats = {k: v.detach().clone() for k, v in splats.items()}
        self._version += 1  # every client's view is stale
        self.status.content = status

    def _toggle_pause(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
            self.pause_button.label = "Pause training"
        else:
            self.paused.set()
            self.pause_button.label = "Resume training"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.stop()


def wait_while_paused(paused, stop: threading.Event) -> None:
    """Blocks while `paused` is set, unless `stop` is (Ctrl-C stops a paused run too)."""
    while paused.is_set() and not stop.is_set():
        stop.wait(0.1)


def to_numpy(splats) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in splats.items()}


def to_tensors(arrays: dict[str, np.ndarray], device: str) -> dict[str, Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def serve_training(splats: dict[str, np.ndarray], device: str, port: int, max_resolution: int, backend: str,
                   paused, updates, ready) -> None:
    """The live viewer's process: serves `splats`, then each (splats, status) taken from `updates`, until a
    None or the trainer's end. Sends ("port", n) or ("error", why) through `ready` once started."""
    os.nice(10)  # the cores are training's: the viewer's renders and server wait for them
    torch.set_num_threads(1)
    try:
        viewer = Viewer(to_tensors(splats, device), port=port, max_resolution=max_resolution, backend=backend,
                        paused=paused)
    except ImportError as e:
        ready.send(("error", f"--viewer needs viser ({e.name} is missing): pip install 'esd-gs[viewer]'"))
        return
    except OSError as e:
        ready.send(("error", f"--viewer could not serve on port {port} ({e.strerror or e})"))
        return
    except UserError as e:
        ready.send(("error", f"--viewer: {e}"))
        return
    ready.send(("port", viewer.port))
    trainer = multiprocessing.parent_process()
    try:
        while True:
            try:
                item = updates.get(timeout=1.0)
            except queue.Empty:
                if trainer is not None and not trainer.is_alive():  # killed without stopping us
                    break
                continue
            if item is None:
                break
            viewer.update(to_tensors(item[0], device), item[1])
    finally:
        viewer.stop()


class LiveViewer:
    """`train --viewer`: a Viewer in a process of its own, fed copies of the splats (`update`); its pause
    button holds training in `wait_while_paused`."""

    def __init__(self, splats, port: int, max_resolution: int = 256, backend: str = "auto",
                 start_timeout: float = 120.0):
        ctx = multiprocessing.get_context("spawn")  # not fork: the training process's OpenMP is not fork-safe
        self.paused = ctx.Event()
        self._updates = ctx.Queue(maxsize=1)
        receive, send = ctx.Pipe(duplex=False)
        device = str(splats["means"].device)
        self._process = ctx.Process(target=serve_training, name="esd-gs viewer", daemon=True,
                                    args=(to_numpy(splats), device, port, max_resolution, backend, self.paused,
                                          self._updates, send))
        # started with SIGINT blocked, which it keeps: Ctrl-C is the trainer's to handle, and it stops us
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        send.close()
        try:
            kind, value = receive.recv() if receive.poll(start_timeout) else \
                ("error", f"the --viewer process did not start within {start_timeout:.0f} s")
        except EOFError:
            kind, value = "error", ("the --viewer process ended while starting (its error is above; a script that "
                                    "trains with the viewer needs `if __name__ == '__main__':` around it, as "
                                    "multiprocessing's spawn does)")
        finally:
            receive.close()
        if kind == "error":
            self._process.kill()
            self._process.join(timeout=5)
            raise UserError(value)
        self.port = value

    def update(self, splats, status: str) -> None:
        """Shows these splats (copied) and this status line; training never waits for the viewer: if it is
        behind, these replace the update still waiting."""
        item = (to_numpy(splats), status)
        try:
            self._updates.put_nowait(item)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._updates.get_nowait()
            with contextlib.suppress(queue.Full):
                self._updates.put_nowait(item)

    def wait_while_paused(self, stop: threading.Event) -> None:
        wait_while_paused(self.paused, stop)

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(queue.Full):
                self._updates.put(None, timeout=5)
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._updates.cancel_join_thread()  # never block the trainer's exit on an unread update
