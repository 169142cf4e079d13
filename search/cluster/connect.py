"""Connecting to Ray: ``ray_session`` (the one Ray lifetime of a command), token auth as
``ray.init()`` decides it, and connection errors in one line."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from space_defs.cli import UsageError

from .. import internals
from .place import Place, place_of
from .processes import descendants, stop_processes
from .target import Target


def quiet_libraries() -> None:
    """Our recorder prints one line per trial event; Tune's and Optuna's own chatter goes. Set
    before Ray starts, so its workers inherit it; a quieter Optuna stays quieter."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old engine honours verbose=0
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # tracebacks: the recorder says one line
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if optuna.logging.get_verbosity() < optuna.logging.WARNING:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


TERMINATED = threading.Event()  # set when the session's driver was sent SIGTERM


def _stop_as_on_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's time limit, ``kill``, spot reclamation) stops the sweep as Ctrl-C
    does: as a SIGINT, which Tune catches to save its state and stop its trials."""
    TERMINATED.set()
    os.kill(os.getpid(), signal.SIGINT)


@contextmanager
def ray_session(target: Target, **init_kwargs: Any) -> Iterator[Place]:
    """``connect(target)`` for the block, then ``ray.shutdown()``. An embedded Ray is this
    command's alone: when the block is left (normally, by an error, or by Ctrl-C) every process
    it started is gone (``ray.shutdown()`` stops its GCS and raylet, and leaves the raylet's
    agents and workers to notice on their own, seconds or minutes later). A cluster's processes
    are the cluster's: only this command's connection ends. Tune's and Optuna's chatter is
    quieted first (quiet_libraries). SIGTERM is taken as Ctrl-C for the block (TERMINATED
    says it came): set after ``ray.init``, whose own handler would dump a native stack and
    exit."""
    quiet_libraries()
    place = connect(target, **init_kwargs)
    on_term = signal.signal(signal.SIGTERM, _stop_as_on_ctrl_c)
    try:
        yield place
    finally:
        import ray

        started = descendants() if target.embedded else {}
        ray.shutdown()
        stop_processes(started)
        signal.signal(signal.SIGTERM, on_term)


def connect(target: Target, **init_kwargs: Any) -> Place:
    """``ray.init`` for ``target`` (an embedded Ray binds 127.0.0.1 when the caller set Ray's
    local-only mode first), then where it landed. UsageError, in one line, when the cluster
    cannot be reached, refuses our token, or runs another Ray version."""
    import ray

    kwargs = {"log_to_driver": False, "logging_level": "warning", **init_kwargs}
    if target.embedded:
        _token_auth_as_ray_init(target)
        ray.init(address="local", include_dashboard=False, configure_logging=True, **kwargs)
        return place_of(target)
    _check_reachable(target.address)
    _token_auth_as_ray_init(target)
    _check_token(target)
    try:
        ray.init(address=target.address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, its own
        raise _connect_error(target, e) from None
    return place_of(target)


def _token_auth_as_ray_init(target: Target) -> None:
    """Token authentication decided as ``ray.init()`` decides it (Ray 2.60's worker.py), then
    set explicitly in RAY_AUTH_MODE, which is also what keeps Ray's "Token authentication is
    enabled" warning off every run: an embedded Ray uses a token (Ray writes ~/.ray/auth_token
    if there is none); the cluster whose head is this machine, the one ``ray.init()`` finds by
    itself, is joined with a token whenever one is available (~/.ray/auth_token,
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), as `ray start --head` enables token auth whenever
    one is. An explicit address (--address, RAY_ADDRESS, as Ray's SLURM pattern passes), which
    ``ray.init`` never auto-enables, is joined with the token available when its head asks
    for one (it refuses a connection without). RAY_AUTH_MODE given: left as it is."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    # Asked first, then the token looked up: looking it up loads it into Ray's C++ client,
    # which then presents it to a head that has no token auth, and trials never start there.
    if target.embedded or ((target.source == "head" or _asks_for_token(target))
                           and internals.has_token()):
        os.environ["RAY_AUTH_MODE"] = "token"  # for this process and every one it starts
        internals.reload_ray_config()  # Ray read the mode when it was imported


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens there."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}); check "
                         "the address (`ray status` on the head node), or use --address local "
                         "for an embedded Ray") from None


def _asks_for_token(target: Target) -> bool:
    """Whether the head at an explicit address refuses a connection without a token."""
    if "://" in target.address:
        return False
    try:
        _gcs_client(target.address)
    except Exception as e:  # noqa: BLE001 - only an authentication refusal answers the question
        return _is_auth_error(e)
    return False


def _gcs_client(address: str) -> None:
    """A connection to the head's GCS, Ray's C++ client's log of a refusal kept off stderr."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                internals.gcs_client(address)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _is_auth_error(error: Exception) -> bool:
    return "auth" in type(error).__name__.lower() or "InvalidAuthToken" in str(error)


def _check_token(target: Target) -> None:
    """A wrong or missing token fails in a second here, not after ray.init's 20 s of retries."""
    if "://" in target.address:
        return
    try:
        _gcs_client(target.address)
    except Exception as e:  # noqa: BLE001 - only an authentication failure is ours to explain
        if _is_auth_error(e):
            raise _connect_error(target, e) from None


def _connect_error(target: Target, error: Exception) -> UsageError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    where = f"the Ray cluster at {target.address!r} ({target.source})"
    if _is_auth_error(error):
        return UsageError(f"{where} refused this command's authentication token: set "
                          "RAY_AUTH_MODE=token and give the cluster's token in ~/.ray/auth_token "
                          "or RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head prints it)")
    if "version mismatch" in str(error).lower():
        return UsageError(f"{where} runs another Ray or Python version than this command "
                          f"({first}); run the sweep on the head node, or install the same versions")
    return UsageError(f"cannot connect to {where}: {first}")
