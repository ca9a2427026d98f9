# The image every node of an EMDLOT Ray cluster runs (cluster.yaml points at it).
#   docker build -t emdlot:gpu .                         # GPU workers: vLLM + CUDA torch
#   docker build --build-arg EXTRAS= -t emdlot:cpu .     # CPU-only nodes / laptops
# The CUDA runtime comes from the NVIDIA base image; torch==2.13.0 from PyPI is the CUDA build
# there (vLLM 0.29 pins the same torch), so the `gpu` extra resolves without a second index.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG EXTRAS=gpu
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/emdlot \
    PATH=/opt/emdlot/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
      openssh-client rsync tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv $VIRTUAL_ENV

# Ray's cluster launcher runs commands as this user inside the container.
RUN useradd --create-home --shell /bin/bash ray
WORKDIR /home/ray/emdlot

# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
COPY emdlot/__init__.py emdlot/__init__.py
RUN pip install --upgrade pip \
 && pip install ".${EXTRAS:+[$EXTRAS]}" \
 && pip uninstall -y emdlot
COPY emdlot emdlot
COPY flows flows
COPY benchmarks benchmarks
RUN pip install --no-deps ".${EXTRAS:+[$EXTRAS]}" && chown -R ray:ray /home/ray

USER ray
# The T-LSTM's C++ step loops (emdlot/model/native.py), built into the image so that no node builds them at run time.
RUN python -c "from emdlot.model import native; assert native.tlstm_steps() is not None"
# Model weights are mounted or downloaded into this cache; nothing is fetched at build time.
ENV HF_HOME=/home/ray/.cache/huggingface
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["emdlot", "--help"]
