import os
import tempfile

# Tests run on 2 CPU cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Ray's temp dir of this test session alone: a sweep attaches on its own only to a cluster
# started in Ray's temp dir (search.cluster.ATTACH_RULE), and other Ray instances on this
# machine must never be that cluster. Short, for Ray's unix socket paths.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
# One Ray token for every Ray this session starts or joins (Ray reads RAY_AUTH_MODE when it is
# imported, and its C++ client keeps the first token it loaded): set before anything imports
# ray, and never the user's ~/.ray/auth_token.
_token = os.path.join(os.environ["RAY_TMPDIR"], "auth_token")
with open(os.open(_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as _f:
    _f.write(os.urandom(32).hex())
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=_token)
