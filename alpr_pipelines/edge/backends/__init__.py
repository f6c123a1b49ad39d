"""How an edge box runs a model: ONNX Runtime (``onnx``), TensorRT engines (``tensorrt``), and the copy of an ONNX
model optimized for this box (``box_optimized``). Import the module you need: this package imports nothing, so the
child that prepares new versions loads ONNX Runtime without OpenCV."""
