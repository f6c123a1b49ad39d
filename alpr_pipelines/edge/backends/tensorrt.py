"""TensorRT engine backend for the edge (no torch): the TensorRT runtime plus cuda-python for device memory.

Ultralytics writes engines as ``<4-byte little-endian length><JSON metadata><serialized engine>``; the metadata holds
class names, imgsz and stride, like the ONNX ``metadata_props``. Pre- and post-processing are the ONNX backend's, so
both backends give the same boxes for the same network output. Engines are tied to a GPU architecture: the loader
only picks an engine whose compute capability matches this box's GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from alpr_pipelines.edge.yolo import Detection, decode, letterbox, to_tensor


def read_engine_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """Split an Ultralytics engine file into (metadata, serialized engine)."""
    data = Path(path).read_bytes()
    meta_len = int.from_bytes(data[:4], "little")
    try:
        meta = json.loads(data[4 : 4 + meta_len].decode("utf-8"))
        return meta, data[4 + meta_len :]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, data  # a plain engine without Ultralytics' header


def _check(err: Any) -> None:
    code = err[0] if isinstance(err, tuple) else err
    if int(code) != 0:
        raise RuntimeError(f"CUDA error {code}")


class TensorRTDetector:
    """A YOLO11 TensorRT engine (static shape, one input, one output), run synchronously on one CUDA stream."""

    def __init__(self, path: str | Path, model_version: str | None = None):
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self._cudart = cudart
        meta, blob = read_engine_file(Path(path))
        if "names" not in meta:
            raise ValueError(f"{path} carries no class names; build it with `alpr` (Ultralytics' exporter)")
        self.names = {int(k): str(v) for k, v in meta["names"].items()}
        imgsz = meta.get("imgsz", [640, 640])
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.model_version = model_version
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise ValueError(f"{path} could not be deserialized on this GPU (engines do not move between GPUs)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.in_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.out_shape = tuple(self.engine.get_tensor_shape(self.output_name))
        self.in_dtype = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        self.host_out = np.empty(self.out_shape, self.out_dtype)
        err, self.d_in = cudart.cudaMalloc(int(np.prod(self.in_shape)) * np.dtype(self.in_dtype).itemsize)
        _check(err)
        err, self.d_out = cudart.cudaMalloc(self.host_out.nbytes)
        _check(err)
        err, self.stream = cudart.cudaStreamCreate()
        _check(err)
        self.context.set_tensor_address(self.input_name, int(self.d_in))
        self.context.set_tensor_address(self.output_name, int(self.d_out))

    def raw(self, tensor: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        host_in = np.ascontiguousarray(tensor, dtype=self.in_dtype)
        _check(cudart.cudaMemcpyAsync(self.d_in, host_in.ctypes.data, host_in.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(self.host_out.ctypes.data, self.d_out, self.host_out.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return self.host_out[0].astype(np.float32)

    def detect(self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.7,
               scaleup: bool = True) -> list[Detection]:
        """As :meth:`OnnxDetector.detect`; an engine has a fixed input, so every image fills it (``scaleup`` is
        accepted for the common interface and has no effect)."""
        padded, box = letterbox(image_bgr, self.imgsz)
        raw = self.raw(to_tensor(padded))
        return decode(raw, box, image_bgr.shape[:2], self.names, conf, iou, model_version=self.model_version)

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in (getattr(self, "d_in", None), getattr(self, "d_out", None)):
            if ptr is not None:
                cudart.cudaFree(ptr)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
