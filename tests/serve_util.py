"""Helpers of the ibsr-serve tests: a real uvicorn server in a thread, and photos of catalog meshes."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import uvicorn
from PIL import Image

from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import BACKGROUND, render_views


@contextmanager
def running_server(app):
    """Serve `app` with uvicorn on a free loopback port (lifespan included); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def mesh_photo(mesh_path, view: int = 1, size: int = 96) -> tuple[bytes, bytes]:
    """A 'photo' of a catalog mesh (one of its renderings, as RGB PNG) and its mask PNG."""
    gray = render_views(load_mesh(mesh_path), size)[view]
    mask = np.where(gray != BACKGROUND, 255, 0).astype(np.uint8)
    return png_bytes(np.dstack([gray] * 3)), png_bytes(mask)
