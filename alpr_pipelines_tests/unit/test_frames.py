"""The decode-ahead reader: every frame, in order, then the end; a bad source fails clearly; close stops it."""

import cv2
import numpy as np
import pytest

from alpr_pipelines.edge.frames import FrameReader, SourceError


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "count.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(25):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))  # frame i is grey level 10*i
    writer.release()
    return path


def test_every_frame_in_order_then_none(clip):
    with FrameReader(str(clip), depth=2) as reader:
        levels = [int(round(float(f.mean()) / 10)) for f in reader]
        assert reader.read() is None
    assert levels == list(range(25))


def test_close_mid_stream_stops_the_decoder(clip):
    reader = FrameReader(str(clip), depth=1)
    assert reader.read() is not None
    reader.close()
    assert not reader._thread.is_alive()
    assert reader.read() is None


def test_unopenable_source_names_it(tmp_path):
    with pytest.raises(SourceError, match="cannot open .*missing.avi"):
        FrameReader(str(tmp_path / "missing.avi"), name="gate-1")


def test_credentials_never_reach_messages():
    from alpr_pipelines.edge.frames import redact

    assert redact("rtsp://admin:hunter2@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact("rtsp://admin:p@ss@10.0.0.5/x@y") == "rtsp://***@10.0.0.5/x@y"
    assert redact("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s" and redact(0) == "0"
    with pytest.raises(SourceError) as info:
        FrameReader("rtsp://admin:hunter2@127.0.0.1:9/none", name="gate")
    assert "hunter2" not in str(info.value) and "***@127.0.0.1" in str(info.value)


def test_a_dropped_stream_is_opened_again_with_backoff(monkeypatch):
    """A stream that ends is a camera that dropped: the reader opens it again (the second try succeeds here) and
    the frames go on; a file would have ended."""
    import alpr_pipelines.edge.frames as frames

    opens = {"n": 0}

    class FlakyCamera:
        def __init__(self, source):
            opens["n"] += 1
            self.session = opens["n"]
            self.left = 3  # sessions 1 and 3 stream 3 frames; 2 and later ones do not open

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return self.session in (1, 3)

        def read(self):
            if self.left == 0:
                return False, None
            self.left -= 1
            return True, np.full((4, 4, 3), self.session, np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(frames.cv2, "VideoCapture", FlakyCamera)
    reader = FrameReader("rtsp://user:pw@camera/stream", name="flaky", first_backoff=0.01, max_backoff=0.02)
    try:
        got = [int(reader.read()[0, 0, 0]) for _ in range(6)]
    finally:
        reader.close()
    assert got == [1, 1, 1, 3, 3, 3] and reader.reconnects == 1 and opens["n"] >= 3
