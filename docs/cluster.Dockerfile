# The image every node of cluster.yaml runs: Ray at the driver's version on Python 3.11 with
# CUDA, and torch plus every other dependency of the project, so that a GPU spot worker boots
# into a working environment after one image pull (no pip install of torch at boot).
# Build it from the checkout's root whenever pyproject.toml or Ray's version changes, push it to
# the registry cluster.yaml names, under a new tag (docs/CLUSTER.md):
#   docker build -f docs/cluster.Dockerfile -t robust-arch-search:ray2.60.0-py311-torch2.14.1 .
#
# torch's CUDA build is pinned: TORCH_CUDA names the wheel index (cu130: CUDA 13.0, which needs an
# NVIDIA driver >= 580 on the host; cluster.yaml's AMI has one, docs/CLUSTER.md), and the build
# fails when the installed torch is built for any other CUDA (or none).
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu
ARG RAY_VERSION
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CUDA=cu130
# pyproject.toml is the one list of dependencies: install torch from the pinned CUDA index first,
# then the project with the rest, then remove the project itself; each node installs the checkout
# `ray up` synced (pip --no-deps, seconds).
COPY --chown=ray:users pyproject.toml README.md /tmp/ras/
COPY --chown=ray:users space_defs /tmp/ras/space_defs
COPY --chown=ray:users trainer /tmp/ras/trainer
COPY --chown=ray:users search /tmp/ras/search
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && pip install --no-cache-dir "/tmp/ras" "ray[default,tune]==${RAY_VERSION}" boto3 \
 && pip uninstall -y robust-arch-search \
 && rm -rf /tmp/ras \
 && python -c "import ray, torch; \
cuda = 'cu' + (torch.version.cuda or 'none').replace('.', ''); \
assert ray.__version__ == '${RAY_VERSION}', 'Ray ' + ray.__version__; \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', 'torch ' + torch.__version__; \
assert cuda == '${TORCH_CUDA}', 'torch ' + torch.__version__ + ' is built for ' + cuda + ', not ${TORCH_CUDA}'; \
print('Ray', ray.__version__, 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
