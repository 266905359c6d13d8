# syntax=docker/dockerfile:1
# One-shot export: copies the committed Triton configs and python models into the model repository
# volume (/models) and writes the ONNX graphs + manifest.json there with `python -m export`.
# Used by docker-compose.yml (service `export`) and by the Kubernetes Job `model-export`.
#
#   docker build -f deploy/docker/export.Dockerfile -t mmretrieval/export:0.1.0 .
#
# Needs the model hub at run time (or local checkpoints mounted and passed with EXPORT_ARGS, e.g.
# "--clip-pretrained /ckpt/clip.safetensors --blip-checkpoint /ckpt/blip-base"). CPU is enough:
# export runs once, and its parity checks run on CPU.
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
COPY model_repository/ model_repository/
# torch first, from PyTorch's CPU index: constraints.txt pins torch==2.13.0 / torchvision==0.28.0, which
# the "+cpu" builds satisfy; from PyPI the same pin would pull the multi-GB CUDA build.
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu torch torchvision \
 && pip install -c constraints.txt ".[export]"
COPY deploy/docker/export-entrypoint.sh /usr/local/bin/mm-export
RUN groupadd --system --gid 10001 mm \
 && useradd --system --uid 10001 --gid mm --home-dir /home/mm --create-home --shell /usr/sbin/nologin mm \
 && mkdir -p /models /cache \
 && chown mm:mm /models /cache \
 && chmod 0755 /usr/local/bin/mm-export
# A fresh named volume mounted on /models or /cache takes these owners, so the export can write.
ENV HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    MODEL_REPOSITORY=/models
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/mm-export"]
