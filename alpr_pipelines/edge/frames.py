"""Camera decoding on its own thread, a few frames ahead of detection.

OpenCV releases the GIL while it decodes, so a reader thread decodes frame n+1 while ONNX Runtime runs frame n:
decode time leaves the per-frame path. The queue is bounded and the reader blocks when it is full, so every decoded
frame is still processed, in order, and memory stays at ``depth`` frames.

A network stream (``rtsp://``, ``http://``, ...) that drops is opened again with exponential backoff, for as long as
the reader runs; a file ends where it ends. Credentials in a URL never appear in messages (:func:`redact`).
"""

from __future__ import annotations

import logging
import queue
import re
import threading

import cv2
import numpy as np

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")  # up to the last @: passwords hold @


class SourceError(Exception):
    """A camera source cannot be opened."""


def redact(source: str | int) -> str:
    """``source`` for messages: a URL's user and password replaced by ``***``."""
    return _USERINFO.sub(r"\g<scheme>***@", str(source))


def is_stream(source: str | int) -> bool:
    return isinstance(source, str) and "://" in source


class FrameReader:
    """Iterate the frames of ``source`` (a file, an RTSP URL or a device id), decoded ahead on a thread.

    ``reconnect``: open a stream again when it drops (default: for network URLs); waits ``first_backoff`` seconds,
    doubling up to ``max_backoff``, and counts the reconnections in ``reconnects``.
    """

    _END = None

    def __init__(self, source: str | int, depth: int = 4, name: str = "camera", reconnect: bool | None = None,
                 first_backoff: float = 0.5, max_backoff: float = 30.0):
        self.source, self.name = source, name
        self.reconnect = is_stream(source) if reconnect is None else reconnect
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.reconnects = 0
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"camera {name}: cannot open {redact(source)}")
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

    def _reopen(self) -> bool:
        """Open the stream again, backing off between tries, until it opens (True) or the reader stops."""
        self.cap.release()
        delay = self.first_backoff
        while not self._stop.wait(delay):
            self.cap = cv2.VideoCapture(self.source)
            if self._stop.is_set():  # closed while opening: close() has released the old capture, not this one
                self.cap.release()
                return False
            if self.cap.isOpened():
                self.reconnects += 1
                log.warning("camera %s: %s is back (reconnection %d)", self.name, redact(self.source),
                            self.reconnects)
                return True
            self.cap.release()
            log.warning("camera %s: %s does not answer; trying again in %.1f s", self.name, redact(self.source),
                        min(delay * 2, self.max_backoff))
            delay = min(delay * 2, self.max_backoff)
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self.cap.read()
                if not ok and self.reconnect and not self._stop.is_set():
                    log.warning("camera %s: %s dropped; reconnecting", self.name, redact(self.source))
                    if self._reopen():
                        continue
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
