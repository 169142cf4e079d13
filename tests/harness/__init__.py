"""What the tests bring: fault injection, Ray nodes, servers, and reading a child's report."""

import json


def last_json(stdout: str):
    """The last JSON line a child process printed: Ray may print warnings to stdout as well
    (on a loaded machine: "raylet has lagging heartbeats ...")."""
    return json.loads([line for line in stdout.splitlines() if line.startswith(("{", "["))][-1])
