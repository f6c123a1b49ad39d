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
