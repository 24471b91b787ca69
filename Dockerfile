# The naics-pipeline image: the user code (gRPC code server, run and step workers) and, with another
# command, the webserver and the daemon (deploy/docker-compose.yaml, deploy/helm/values.yaml).
#
#   CPU (default):  docker build -t naics-pipeline:cpu .
#   CUDA:           docker build -t naics-pipeline:cuda \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# CHANGE both CUDA arguments together to the CUDA build of torch that matches the GPU nodes' driver.
# (This file was written where no docker daemon runs: docs/deploy.md says what was and was not run.)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# The CUDA bases are plain Ubuntu: they need a Python (python:3.11-slim has one).
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/naics-pipeline
# torch first, from the index of the chosen build, at the version constraints.txt pins.
COPY constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX}" "$(grep '^torch==' constraints.txt)"
# Editable: the checkout's folder is the package's REPO_ROOT (curricula/, the default data root).
COPY pyproject.toml README.md ./
COPY naics_pipeline ./naics_pipeline
COPY curricula ./curricula
COPY deploy ./deploy
RUN pip install -c constraints.txt -e .

# The instance: Postgres from DAGSTER_POSTGRES_URL, the queue, pools, run monitoring (deploy/dagster.yaml).
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    NAICS_STORAGE_ROOT=/data \
    NAICS_EXECUTOR=multiprocess
RUN mkdir -p "$DAGSTER_HOME" /data && cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 4000
# The gRPC code server that deploy/workspace.yaml loads; compose and Helm give the webserver and the
# daemon their own commands on the same image.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "naics_pipeline.definitions"]
