# syntax=docker/dockerfile:1
# Triton for GPU hosts: NVIDIA's NGC image (Triton 2.51 = release 24.10, the version the project's
# python models were tested against through nvidia-pytriton 0.7.0) plus what the repository's python
# models import (preprocessing and runtime, and their pinned dependencies).
#
#   docker build -f deploy/docker/triton.Dockerfile -t mmretrieval/triton:0.1.0 .
#
# The model repository is NOT baked in: it is the volume that the export step fills (configs + ONNX
# + manifest.json), mounted read-only on /models. To bake one in instead (air-gapped clusters):
#   FROM mmretrieval/triton:0.1.0
#   COPY exported_model_repository/ /models/
#
# Python version. NGC 24.10 is Ubuntu 22.04 with Python 3.10, and its python backend stub embeds
# libpython3.10. The project pins Python 3.11 (pyproject: >=3.11,<3.12; constraints.txt was verified
# on 3.11). So the image gets Python 3.11 from the deadsnakes PPA (Ubuntu 22.04's own python3.11 is
# 3.11.0~rc1, a release candidate), a 3.11 virtual environment with the pinned packages, and the python backend's
# stub is replaced by the 3.11 stub of the SAME Triton release (2.51), which the nvidia-pytriton 0.7.0
# wheel ships -- the exact stub the CPU tests run (triton_runner/server.py links the same file).
# Stub and server must come from the same release: bump this tag and nvidia-pytriton together.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/mm-venv
# The stub finds the interpreter's site-packages through PATH (venv first), as in triton_runner.
ENV PATH=/opt/mm-venv/bin:$PATH

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
# Base dependencies only (numpy<2, pillow, tokenizers, ftfy, regex, onnx, onnxruntime): no torch.
# nvidia-pytriton only for its Python 3.11 backend stub (pinned in constraints.txt).
RUN pip install -c constraints.txt ".[gpu-preprocessing]" nvidia-pytriton
RUN set -eu; \
    wheel="$(python -c 'import importlib.util; print(importlib.util.find_spec("pytriton").submodule_search_locations[0])')"; \
    stub="$wheel/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub"; \
    test -x "$stub"; \
    cd /opt/tritonserver/backends/python; \
    mv triton_python_backend_stub triton_python_backend_stub.python3.10; \
    ln -s "$stub" triton_python_backend_stub

COPY deploy/docker/triton-entrypoint.sh /usr/local/bin/mm-triton
RUN chmod 0755 /usr/local/bin/mm-triton \
 && mkdir -p /models /opt/tritonserver/trt_cache
ENV MODEL_REPOSITORY=/models
# KServe v2: HTTP, gRPC, Prometheus metrics
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["/usr/local/bin/mm-triton"]
