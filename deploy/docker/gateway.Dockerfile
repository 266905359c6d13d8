# syntax=docker/dockerfile:1
# The gateway: `python -m gateway` (grpc.aio search service), configured only by MM_* environment
# variables (gateway/settings.py). Slim, non-root, health-checked over grpc.health.v1.
#
#   docker build -f deploy/docker/gateway.Dockerfile -t mmretrieval/gateway:0.1.0 .
#
# The tag follows pyproject's version; tests/test_deploy.py checks that every manifest uses it.

# ---- build stage: a virtual environment with the pinned serving dependencies ----------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY preprocessing/ preprocessing/
COPY runtime/ runtime/
COPY retrieval/ retrieval/
COPY gateway/ gateway/
COPY client/ client/
COPY export/ export/
COPY triton_runner/ triton_runner/
COPY quality/ quality/
# Exactly the versions CI tested (constraints.txt). "serving" = grpcio (+health, reflection),
# tritonclient, pymilvus, prometheus-client, pydantic-settings; no torch.
RUN pip install -c constraints.txt ".[serving,openvino]"   # openvino: the shipped CPU engine (MM_ENGINE=auto)

# ---- runtime stage ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 mm \
 && useradd --system --uid 10001 --gid mm --home-dir /home/mm --create-home --shell /usr/sbin/nologin mm
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/mm-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MM_HOST=0.0.0.0 \
    MM_PORT=50051 \
    MM_METRICS_PORT=9464
WORKDIR /home/mm
USER 10001:10001
# gRPC (retrieval.v1 + grpc.health.v1 + reflection) and Prometheus /metrics
EXPOSE 50051 9464
# grpc.health.v1 Check against MM_PORT; no grpc_health_probe binary to download.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/bin/mm-healthcheck"]
ENTRYPOINT ["python", "-m", "gateway"]
