"""Inference on exported ONNX graphs with ONNX Runtime: the code the local backend, Triton's CPU
python models and export's parity checks share. Torch-free."""
