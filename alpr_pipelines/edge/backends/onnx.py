"""YOLO11 detection through ONNX Runtime. Class names, input size and stride come from the model's own
``metadata_props`` (written by Ultralytics' exporter), so a file needs nothing beside it to serve.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from alpr_pipelines.edge.backends.box_optimized import available_providers
from alpr_pipelines.edge.yolo import Detection, Letterbox, check_answer, decode, letterbox, to_tensor

log = logging.getLogger(__name__)

PRECISION_KEY = "alpr_precision"  # metadata_props key: "int8" on a statically quantized model, absent on FP32
BATCH_PAD_WASTE = 1.3  # a batch of crops may hold at most 30% more pixels than its crops alone


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime options for a latency-bound, one-frame-at-a-time detector: every graph optimization, sequential
    execution, and ``threads`` intra-op threads (ONNX Runtime's default without: one per core, each pinned) that spin
    while a run lasts and stop the moment it ends, so they never hold a core the next session or a new version needs.
    Why and what it measured: docs/edge.md, "Sessions"."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxDetector:
    """A YOLO11 ONNX model ready to detect; names, imgsz and stride are read from the file's metadata.

    A dynamic-shape model (exported with ``dynamic=True``; its input height and width are symbolic) is run
    rectangular: each frame is padded only to a multiple of the stride, never to a square. ``imgsz`` overrides the
    exported size for such a model (a model trained at 320 may serve 640 frames at 640); a fixed-shape model runs at
    its own size only. ``optimized``: the file ``box_optimized.optimized_for_this_box`` made of ``path``, loaded instead with
    no graph optimization left to do (a new version then loads without slowing the serving one).
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        model_version: str | None = None,
        imgsz: int | None = None,
        optimized: Path | None = None,
    ):
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"{path} is not an .onnx file; the ONNX backend loads only ONNX models")
        self.path = path
        self.model_version = model_version
        options = session_options(threads)
        if optimized is not None:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done already, for this box
        self.session = ort.InferenceSession(str(optimized or path), options,
                                            providers=providers or available_providers())
        meta = read_metadata(self.session)
        if "names" not in meta:
            raise ValueError(f"{path} has no class names in its metadata; export it with Ultralytics")
        self.names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        exported = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        self.stride = int(meta.get("stride", 32))
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dynamic = not all(isinstance(d, int) for d in first.shape[2:])
        self.precision = meta.get(PRECISION_KEY, "fp32")  # written by the pipeline's INT8 quantization
        self.imgsz: tuple[int, int] = (int(exported[0]), int(exported[1]))
        if imgsz is not None:
            self.resize(imgsz)

    def resize(self, imgsz: int) -> None:
        """Serve at ``imgsz`` (the longer side). Only a dynamic-shape model can change size."""
        if imgsz == self.imgsz[0] == self.imgsz[1]:
            return
        if not self.dynamic:
            raise ValueError(f"{self.path} has a fixed input of {self.imgsz[0]}x{self.imgsz[1]}; it cannot run at "
                             f"{imgsz} (export it with dynamic=True, or leave imgsz unset)")
        if imgsz < self.stride or imgsz % self.stride:
            raise ValueError(f"imgsz must be a positive multiple of the model's stride {self.stride}, got {imgsz}")
        self.imgsz = (imgsz, imgsz)

    def raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed 1x3xHxW tensor; returns ``(4 + nc, anchors)``."""
        return self.session.run(None, {self.input_name: tensor})[0][0]

    @property
    def first_run_costly(self) -> bool:
        """Whether this session's first run at the frames' shape costs much more than the runs after it, so it should
        warm up at that shape before it serves: on a GPU provider (kernel selection, engine builds), and for a
        fixed-shape model (its smallest input is its full one). On the CPU a dynamic model only plans memory on its
        first run, a few ms (docs/edge.md, "Swaps")."""
        return self.session.get_providers()[0] != "CPUExecutionProvider" or not self.dynamic

    def smoke_run(self) -> None:
        """Run the network once on its smallest input (one stride square, a few ms), to show before it serves that it
        runs on this box and answers as a detector of its classes does. Raises ValueError."""
        check_answer(self.raw(np.zeros((1, 3, self.stride, self.stride), np.float32)), self.names, self.path)

    def prepare(self, image_bgr: np.ndarray, scaleup: bool = True) -> tuple[np.ndarray, Letterbox]:
        """Letterbox (rectangular for a dynamic model) and convert to the network's input tensor."""
        padded, box = letterbox(image_bgr, self.imgsz, self.stride, auto=self.dynamic, scaleup=scaleup)
        return to_tensor(padded), box

    def detect_many(self, images: list[np.ndarray], conf: float = 0.25, iou: float = 0.7) -> list[list[Detection]]:
        """Detect in several images (crops), each fitted to the model's size as :meth:`detect` fits one, in as few
        network runs as pay off.

        A dynamic-shape model takes crops of similar shape as one batch: each is scaled as on its own, then padded
        (centred, grey) into the batch's common shape, the largest scaled height and width rounded up to the stride.
        A crop joins a batch only while the batch's padded pixels stay within :data:`BATCH_PAD_WASTE` of the pixels
        its crops need on their own, so a tall crop never makes every wide one pay for its height. Fewer runs save
        ONNX Runtime's per-call overhead. A fixed-shape model runs them one by one.
        """
        if not images:
            return []
        if not self.dynamic:
            return [self.detect(im, conf, iou) for im in images]
        s = self.stride
        gains = [min(self.imgsz[0] / im.shape[0], self.imgsz[1] / im.shape[1]) for im in images]
        scaled = [(round(im.shape[0] * g), round(im.shape[1] * g)) for im, g in zip(images, gains, strict=True)]
        shapes = [(-(-h // s) * s, -(-w // s) * s) for h, w in scaled]
        order = sorted(range(len(images)), key=lambda i: -shapes[i][0] * shapes[i][1])
        groups: list[list[int]] = []
        for i in order:
            if groups:
                group = groups[-1] + [i]
                h = max(shapes[j][0] for j in group)
                w = max(shapes[j][1] for j in group)
                if h * w * len(group) <= BATCH_PAD_WASTE * sum(shapes[j][0] * shapes[j][1] for j in group):
                    groups[-1] = group
                    continue
            groups.append([i])
        results: list[list[Detection]] = [[] for _ in images]
        for group in groups:
            if len(group) == 1:
                results[group[0]] = self.detect(images[group[0]], conf, iou)
                continue
            h, w = max(shapes[j][0] for j in group), max(shapes[j][1] for j in group)
            padded, boxes = [], []
            for j in group:
                fitted = images[j]
                if scaled[j] != images[j].shape[:2]:
                    fitted = cv2.resize(images[j], (scaled[j][1], scaled[j][0]), interpolation=cv2.INTER_LINEAR)
                out, box = letterbox(fitted, (h, w), s, auto=False, scaleup=False)  # pads only: it fits already
                padded.append(out)
                boxes.append(Letterbox(gain=gains[j] * box.gain, pad_x=box.pad_x, pad_y=box.pad_y))
            batch = cv2.dnn.blobFromImages(padded, scalefactor=1 / 255.0, swapRB=True)
            raw = self.session.run(None, {self.input_name: batch})[0]
            for k, (j, box) in enumerate(zip(group, boxes, strict=True)):
                results[j] = decode(raw[k], box, images[j].shape[:2], self.names, conf, iou,
                                    model_version=self.model_version)
        return results

    def detect(self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.7,
               scaleup: bool = True) -> list[Detection]:
        """Detect objects in a BGR image (as ``cv2.imread`` gives), fitted to the model's size. ``scaleup=False``
        never enlarges the image; it matters only for a dynamic model, a fixed one always fills its input."""
        tensor, box = self.prepare(image_bgr, scaleup=scaleup or not self.dynamic)
        raw = self.raw(tensor)
        return decode(raw, box, image_bgr.shape[:2], self.names, conf, iou, model_version=self.model_version)

