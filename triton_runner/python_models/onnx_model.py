"""One python model for every ONNX graph on CPU: what Triton's onnxruntime backend does on a GPU.

The CPU rendering links this file as `<graph>/1/model.py` next to `<graph>/1/model.onnx`. It opens the
graph with the project's `runtime.sessions.create_session` (the very settings the in-process encoders
use, so results match them), concatenates the requests of a dynamic batch along the batch axis, runs
the graph once, and splits the outputs back per request. Requests whose non-batch shapes differ (a
decoder step with another past length) run as separate groups.
"""
import json
import os
import sys

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from runtime.sessions import create_session  # noqa: E402
from runtime.triton_contract import parameter  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(version_dir, parameter(config, "onnx_file", "model.onnx"))
        threads = int(parameter(config, "intra_op_threads", "0"))  # 0: ONNX Runtime's default (all cores)
        self.session = create_session(path, ["CPUExecutionProvider"], threads)
        self.input_names = [item["name"] for item in config["input"]]
        self.output_names = [item["name"] for item in config["output"]]
        graph_inputs = {item.name for item in self.session.get_inputs()}
        missing = [name for name in self.input_names if name not in graph_inputs]
        if missing:
            raise pb_utils.TritonModelException(f"{path} has no inputs named {missing}")

    def execute(self, requests):
        feeds = []
        for request in requests:
            feeds.append({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names})
        groups = {}
        for index, feed in enumerate(feeds):
            key = tuple((name, feed[name].shape[1:], feed[name].dtype.str) for name in self.input_names)
            groups.setdefault(key, []).append(index)
        responses = [None] * len(requests)
        for indices in groups.values():
            try:
                batch = {name: np.concatenate([feeds[i][name] for i in indices]) for name in self.input_names}
                outputs = self.session.run(self.output_names, batch)
                offset = 0
                for i in indices:
                    size = len(feeds[i][self.input_names[0]])
                    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + size]))
                               for name, out in zip(self.output_names, outputs)]
                    responses[i] = pb_utils.InferenceResponse(tensors)
                    offset += size
            except Exception as exc:  # a failing group fails its own requests, not the server
                error = pb_utils.TritonError(f"onnxruntime failed: {type(exc).__name__}: {exc}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=error)
        return responses

    def finalize(self):
        self.session = None
