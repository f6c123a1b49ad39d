"""Camera decoding on its own thread, a few frames ahead of detection.

OpenCV releases the GIL while it decodes, so a reader thread decodes frame n+1 while ONNX Runtime runs frame n:
decode time leaves the per-frame path. The queue is bounded and the reader blocks when it is full, so every decoded
frame is still processed, in order, and memory stays at ``depth`` frames.
"""

from __future__ import annotations

import queue
import threading

import cv2
import numpy as np


class SourceError(Exception):
    """A camera source cannot be opened."""


class FrameReader:
    """Iterate the frames of ``source`` (a file, an RTSP URL or a device id), decoded ahead on a thread."""

    _END = None

    def __init__(self, source: str | int, depth: int = 4, name: str = "camera"):
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"camera {name}: cannot open {source}")
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: np.ndarray | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self.cap.read()
                if not ok or not self._put(frame):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.error = exc
        finally:
            self._put(self._END)

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of the source (or after :meth:`close`)."""
        if self._stop.is_set() or self._ended:
            return None
        frame = self._queue.get()
        if frame is None:
            self._ended = True
            if self.error is not None:
                raise self.error
        return frame

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.cap.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
