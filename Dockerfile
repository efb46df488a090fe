# Crowd-SFT as a Docker Space (README front matter: sdk: docker, app_port: 7860).
# One image for CPU and GPU hardware: torch==2.13.0 from PyPI is the CUDA build on Linux x86_64,
# so a GPU Space trains on CUDA and a CPU Space runs the same wheel on the CPU.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CROWD_DATA_DIR=/data \
    CROWD_HOST=0.0.0.0 \
    CROWD_PORT=7860 \
    HF_HOME=/home/user/.cache/huggingface

# Spaces run containers as uid 1000. /data is where the storage bucket is mounted; creating it
# here, owned by that user, lets the app also start (with ephemeral data) when none is mounted.
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data \
    && chown user:user /data
USER user
WORKDIR /home/user/app

# The one install recipe, shared with `make` (scripts/install.sh). Only what it reads is copied
# first, so editing the code does not reinstall the dependencies.
COPY --chown=user requirements.txt ./
COPY --chown=user scripts/install.sh scripts/install.sh
RUN scripts/install.sh .venv
ENV PATH=/home/user/app/.venv/bin:$PATH

COPY --chown=user . .

EXPOSE 7860
# The same entry point as `make run`.
CMD ["python", "app.py"]
