# The image every node of cluster.yaml runs: Ray at the driver's version on Python 3.11 with
# CUDA, and torch plus every other dependency of the project, so that a GPU spot worker boots
# into a working environment after one image pull (no pip install of torch at boot).
# Build it from the checkout's root whenever pyproject.toml or Ray's version changes, push it to
# the registry cluster.yaml names (docs/CLUSTER.md):
#   docker build -f docker/Dockerfile -t robust-arch-search:ray2.60.0-py311-torch2.14.1 .
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu
ARG RAY_VERSION
# pyproject.toml is the one list of dependencies: install the project with them, then remove the
# project itself; each node installs the checkout `ray up` synced (pip --no-deps, seconds).
COPY --chown=ray:users pyproject.toml README.md /tmp/ras/
COPY --chown=ray:users space_defs /tmp/ras/space_defs
COPY --chown=ray:users trainer /tmp/ras/trainer
COPY --chown=ray:users search /tmp/ras/search
RUN pip install --no-cache-dir "/tmp/ras" "ray[default,tune]==${RAY_VERSION}" boto3 \
 && pip uninstall -y robust-arch-search \
 && rm -rf /tmp/ras \
 && python -c "import ray, torch; assert ray.__version__ == '${RAY_VERSION}'; print(ray.__version__, torch.__version__, torch.version.cuda)"
