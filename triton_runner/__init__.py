"""Triton without a GPU: render the committed model repository for CPU and run a real tritonserver.

`render` turns model_repository/ (GPU configs, onnxruntime backend) into the same topology on the
python backend (ONNX Runtime inside python models, KIND_CPU); `TritonServer` starts the tritonserver
binary that ships in the nvidia-pytriton wheel on 127.0.0.1 and stops it cleanly.
"""
from triton_runner.server import TritonServer, TritonStartError, free_port  # noqa: F401
