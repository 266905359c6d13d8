# syntax=docker/dockerfile:1
# Triton without a GPU (compose profile `cpu`, Kubernetes overlay `cpu`): the real tritonserver 2.51
# binary with the python backend from the nvidia-pytriton wheel, serving the CPU rendering of the
# model repository (python models that run the exported ONNX graphs with ONNX Runtime; same model
# names, tensors and ensembles as the GPU repository; see triton_runner/render.py).
#
#   docker build -f deploy/docker/triton-cpu.Dockerfile -t mmretrieval/triton-cpu:0.1.0 .
#
# Why not the NGC image on CPU: its onnxruntime backend would run on CPU, but the committed configs are
# the GPU deployment (KIND_GPU, TensorRT accelerator, fp16 warm-up); the rendering is what the test
# suite runs against, and this image is about 1 GB instead of about 15.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/mmretrieval
COPY pyproject.toml constraints.txt README.md ./
COPY preprocessing/ preprocessing/
COPY runtime/ runtime/
COPY retrieval/ retrieval/
COPY gateway/ gateway/
COPY client/ client/
COPY export/ export/
COPY triton_runner/ triton_runner/
COPY quality/ quality/
# Base deps (numpy<2 -- the python backend stub needs numpy 1.x) + nvidia-pytriton (tritonserver) +
# tritonclient (the renderer parses configs with Triton's ModelConfig protobuf). No torch.
RUN pip install -c constraints.txt ".[triton-cpu,openvino]" "tritonclient[grpc]"
COPY deploy/docker/triton_cpu_serve.py /usr/local/bin/mm-triton-cpu
RUN groupadd --system --gid 10001 mm \
 && useradd --system --uid 10001 --gid mm --home-dir /home/mm --create-home --shell /usr/sbin/nologin mm \
 && chmod 0755 /usr/local/bin/mm-triton-cpu
ENV MODEL_REPOSITORY=/models \
    TRITON_CPU_REPOSITORY=/tmp/triton_cpu \
    TRITON_WORKDIR=/tmp/triton
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["python", "/usr/local/bin/mm-triton-cpu"]
