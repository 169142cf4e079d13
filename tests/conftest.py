import os
import tempfile
from pathlib import Path

# The tests' models are tiny: one OpenMP thread. Beside any other load two threads wait on each
# other at every op (a resumed-run test: 126 s at 2 threads, 9.6 s at 1, under stress.py's load);
# on 2 idle cores the trainer tests take 65 s at 1 thread, 61 s at 2.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray's temp dir of this test session alone: a sweep attaches on its own only to a cluster
# started in Ray's temp dir (search.cluster.target.ATTACH_RULE), and other Ray instances on this
# machine must never be that cluster. Short, for Ray's unix socket paths.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
# One Ray token for every Ray this session starts or joins (Ray reads RAY_AUTH_MODE when it is
# imported, and its C++ client keeps the first token it loaded): set before anything imports
# ray, and never the user's ~/.ray/auth_token.
_token = os.path.join(os.environ["RAY_TMPDIR"], "auth_token")
with open(os.open(_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as _f:
    _f.write(os.urandom(32).hex())
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=_token)


import pytest  # noqa: E402  (after the environment above: ray reads it when imported)

from tests.harness import ray_nodes  # noqa: E402


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One local Ray cluster (a real head node on localhost) shared by the tests that attach to
    one; token authentication, as Ray enables by default (the token: above)."""
    temp = tmp_path_factory.mktemp("ray")
    try:
        yield ray_nodes.start_head(temp)
    finally:
        ray_nodes.stop(temp)


def pytest_collection_modifyitems(config, items):
    """Every test in tests/system/ is a system test, and only those: the fast suite is
    ``-m 'not system'``."""
    system = Path(__file__).parent / "system"
    for item in items:
        inside = system in Path(item.fspath).parents
        if inside:
            item.add_marker(pytest.mark.system)
        elif item.get_closest_marker("system") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked system: move it to tests/system/")
