import os
import tempfile

# Tests run on 2 CPU cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Ray's temp dir of this test session alone: a sweep attaches on its own only to a cluster
# started in Ray's temp dir (search.cluster.ATTACH_RULE), and other Ray instances on this
# machine must never be that cluster. Short, for Ray's unix socket paths.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
