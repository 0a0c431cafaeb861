# gnnzero on a PyTorch CUDA image: the base brings CUDA, cuDNN, NCCL and a CUDA build of
# torch; the Makefile installs the rest exactly as on a bare machine (docker/README.md).
#   docker build -t gnnzero .                                   # the default base below
#   docker build --build-arg BASE_IMAGE=pytorch/pytorch:<tag> -t gnnzero .
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
FROM ${BASE_IMAGE}

# make, git and a C++ compiler: torch-scatter / torch-sparse are built from source against
# the image's torch.  Distribution package versions follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential git make ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Only used when the base image has no torch (a stand-in base): what `make install` installs.
ARG TORCH_SPEC="torch==2.13.0"
# The commit recorded in every metrics.json (the image has no .git).
ARG GIT_COMMIT=unknown
ENV GNNZERO_GIT_COMMIT=${GIT_COMMIT} \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/gnnzero
COPY . .
# The venv sees the base image's packages, so its CUDA torch is kept, not reinstalled.
RUN make install PYTHON=python3 VENV_FLAGS=--system-site-packages TORCH_SPEC="${TORCH_SPEC}"
ENV PATH=/opt/gnnzero/.venv/bin:${PATH}

# Datasets are mounted read-only at /data, runs are written to /opt/gnnzero/runs.
VOLUME ["/opt/gnnzero/runs"]
CMD ["deepspeed", "launch/train.py", "--ds_config", "ds_configs/zero2_bf16.json", \
     "--output-dir", "runs/demo"]
