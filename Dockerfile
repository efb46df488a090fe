# Crowd-SFT as a Docker Space (README front matter: sdk: docker, app_port: 7860).
# One image for CPU and GPU hardware: torch==2.13.0 from PyPI is the CUDA build on Linux x86_64,
# so a GPU Space trains on CUDA and a CPU Space runs the same wheel on the CPU.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CROWD_DATA_DIR=/data \
    CROWD_MODELS_DIR=/home/user/models \
    CROWD_HOST=0.0.0.0 \
    CROWD_PORT=7860 \
    HF_HOME=/home/user/.cache/huggingface

# Dev Mode (the Space's VS Code and SSH in the browser) needs these tools in the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash curl wget procps git git-lfs \
    && rm -rf /var/lib/apt/lists/*

# Spaces run containers as uid 1000, and Dev Mode expects the code in /app, owned by it. /data is
# the container's own (local, ephemeral) disk for the live database; the replica is a bucket
# reached through its S3 gateway (or mounted) and named by CROWD_REPLICA, where Litestream
# streams every commit (docs/deploy.md).
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data /app \
    && chown user:user /data /app
USER user
WORKDIR /app

# The one install recipe, shared with `make` (scripts/install.sh). Only what it reads is copied
# first, so editing the code does not reinstall the dependencies.
# The image installs the app's requirements only (make adds requirements-test.txt).
COPY --chown=user requirements.txt pyproject.toml ./
COPY --chown=user scripts/install.sh scripts/install.sh
RUN scripts/install.sh .venv
ENV PATH=/app/.venv/bin:$PATH

COPY --chown=user . .
# The default model, converted once here into CROWD_MODELS_DIR (outside the data dir), so a
# Space never converts it at start.
RUN python -m crowd models

EXPOSE 7860
# The same entry point as `make run`.
CMD ["python", "app.py"]
