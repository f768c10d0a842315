"""Model side of shopcast: simulator, data, PyTorch model, training, evaluation, ONNX export."""
