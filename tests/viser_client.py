"""A headless viser client, as a browser would speak to the viewer: connects over the websocket, reports a
camera, and collects the messages the server sends (tests/test_tools.py; benchmarks/viewer_overhead.py)."""

from __future__ import annotations

import threading
import time

import msgspec
import zstandard


class ViserClient:
    def __init__(self, port: int, size: int = 64, timeout: float = 30.0):
        import viser
        from websockets.sync.client import connect

        deadline = time.monotonic() + timeout
        while True:  # the server may still be starting
            try:
                self.ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.messages: list[dict] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()
        self.send_camera(size)

    def send(self, message) -> None:
        self.ws.send(msgspec.msgpack.encode(message.as_serializable_dict()))

    def send_camera(self, size: int, position=(2.0, 0.0, 0.5)) -> None:
        """A camera looking at the origin from `position`, z up (OpenCV axes, camera-to-world)."""
        import numpy as np
        import viser.transforms as vtf
        from viser._messages import ViewerCameraMessage

        forward = -np.asarray(position, dtype=float) / np.linalg.norm(position)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(forward, right), forward], axis=1)
        self.send(ViewerCameraMessage(wxyz=tuple(vtf.SO3.from_matrix(rotation).wxyz), position=tuple(position),
                                      fov=0.9, near=0.01, far=100.0, image_height=size, image_width=size,
                                      look_at=(0.0, 0.0, 0.0), up_direction=(0.0, 0.0, 1.0)))

    def _receive(self) -> None:
        decompress = zstandard.ZstdDecompressor()
        while not self._done.is_set():
            try:
                raw = self.ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # closed by the server
                return
            size, compressed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
            window = msgspec.msgpack.decode(decompress.decompress(raw[16:16 + compressed], max_output_size=size))
            self.messages.extend(window["messages"])

    def of_type(self, name: str) -> list[dict]:
        return [m for m in list(self.messages) if m["type"] == name]

    def close(self) -> None:
        self._done.set()
        self.ws.close()
        self._thread.join(timeout=5)
