"""Export the trained generator for deployment: ONNX now, TensorRT engines later."""
