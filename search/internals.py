"""Every use of Ray's and Optuna's private names, in one place.

The service reaches past Ray's and Optuna's public APIs where they do not offer what it needs
(docs/DEPENDENCIES.md says what and why). Each such reach is one function or constant here,
whose docstring names the library object it reads, and tests/search/test_internals.py holds each
against the installed library, so that a release that renames or changes one fails that test,
not a sweep. No other module under search/ touches a private name of either library (a test
checks). pyproject.toml pins both below their next minor version; moving a pin means running
that test and fixing this module where it fails.

Light to import: ray and optuna are imported inside the functions, never here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AUTOSCALER_MONITORS", "HEAD_NODE_RESOURCE", "JOURNAL_OPS",
    "asha_milestones", "checkpoint_results", "cluster_config_max_resources", "completed_trials",
    "experiment_trials", "gcs_client", "generator_experiment", "has_token", "journal_backend",
    "latest_checkpoint_result", "node_ip_address", "ot_study", "ot_trials", "reload_ray_config",
    "set_checkpoint_results", "storage_trial_id", "study_id", "study_storage", "token_loader",
    "training_result",
]

# -- Optuna ---------------------------------------------------------------------------------

# optuna.storages.journal._storage.JournalOperation: the op_code of each journal log, by name
# (also what the journals already written hold, so Optuna cannot renumber them lightly)
JOURNAL_OPS: dict[str, int] = {
    "CREATE_STUDY": 0, "DELETE_STUDY": 1, "SET_STUDY_USER_ATTR": 2, "SET_STUDY_SYSTEM_ATTR": 3,
    "CREATE_TRIAL": 4, "SET_TRIAL_PARAM": 5, "SET_TRIAL_STATE_VALUES": 6,
    "SET_TRIAL_INTERMEDIATE_VALUE": 7, "SET_TRIAL_USER_ATTR": 8, "SET_TRIAL_SYSTEM_ATTR": 9,
    "DISCARD_TRIALS": 10,
}


def study_id(study) -> int:
    """optuna.study.Study._study_id (FrozenStudy._study_id too, as a storage's get_all_studies
    gives them): the study's id in its storage, which the storage's own calls take."""
    return study._study_id


def study_storage(study):
    """optuna.study.Study._storage: the storage the study reads and writes (its cached wrapper)."""
    return study._storage


def storage_trial_id(trial) -> int:
    """optuna.trial.FrozenTrial._trial_id (or Trial._trial_id): the trial's id in its storage."""
    return trial._trial_id


def journal_backend(storage):
    """optuna.storages.JournalStorage._backend: the journal backend under a journal storage;
    None for a storage of another kind."""
    from optuna.storages import JournalStorage

    return storage._backend if isinstance(storage, JournalStorage) else None


# -- Ray Tune: searchers --------------------------------------------------------------------

def ot_study(searcher):
    """ray.tune.search.optuna.OptunaSearch._ot_study: the Optuna study it asks and tells."""
    return searcher._ot_study


def ot_trials(searcher) -> dict[str, Any]:
    """ray.tune.search.optuna.OptunaSearch._ot_trials: Tune trial id -> the Optuna trial asked for it."""
    return searcher._ot_trials


def completed_trials(searcher) -> set[str]:
    """ray.tune.search.optuna.OptunaSearch._completed_trials: the Tune trial ids it has told
    the study the end of (the set itself, to add to)."""
    return searcher._completed_trials


def generator_experiment(generator):
    """ray.tune.search.SearchGenerator._experiment: the Experiment whose trials it creates
    (its ``storage`` and ``spec["storage"]`` say where)."""
    return generator._experiment


# -- Ray Tune: schedulers, trials, results --------------------------------------------------

def asha_milestones(scheduler) -> tuple[int, ...]:
    """ray.tune.schedulers.ASHAScheduler._brackets[i]._rungs: the milestones (time_attr values)
    where it may stop a trial, over all its brackets, in increasing order."""
    return tuple(sorted({int(milestone) for bracket in scheduler._brackets
                         for milestone, _ in bracket._rungs}))


def checkpoint_results(manager) -> list:
    """ray.train._internal.checkpoint_manager._CheckpointManager._checkpoint_results: the
    results (_TrainingResult) of the checkpoints it keeps, oldest first."""
    return list(manager._checkpoint_results)


def latest_checkpoint_result(manager):
    """_CheckpointManager._latest_checkpoint_result: the newest checkpoint's result (None if none)."""
    return manager._latest_checkpoint_result


def set_checkpoint_results(manager, results: list, latest) -> None:
    """_CheckpointManager._checkpoint_results and _latest_checkpoint_result, set: the
    checkpoints it keeps (and so deletes as new ones come) and the one a trial resumes from."""
    manager._checkpoint_results = list(results)
    manager._latest_checkpoint_result = latest


def training_result(checkpoint, metrics: dict[str, Any]):
    """ray.train._internal.checkpoint_manager._TrainingResult: a checkpoint with the result
    reported with it, as a checkpoint manager holds them."""
    from ray.train._internal.checkpoint_manager import _TrainingResult

    return _TrainingResult(checkpoint=checkpoint, metrics=metrics)


def experiment_trials(result_grid) -> list:
    """ray.tune.ResultGrid._experiment_analysis.trials: the Tune trials of the run, as Tune
    holds them at its end (statuses and ids, errored ones included)."""
    return list(result_grid._experiment_analysis.trials)


# -- Ray core -------------------------------------------------------------------------------

# ray._common.constants.HEAD_NODE_RESOURCE_NAME: the resource only the head node has
# (in ray.nodes()' "Resources")
HEAD_NODE_RESOURCE = "node:__internal_head__"

# the scripts Ray's autoscaler runs as (ray/autoscaler/_private/monitor.py, v2/monitor.py):
# how its process is told from others on the head
AUTOSCALER_MONITORS = ("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")


def cluster_config_max_resources() -> dict[str, float] | None:
    """ray._private.state.state.get_max_resources_from_cluster_config(): the resources the
    autoscaler may grow the cluster to (from the config it published to the GCS); None without one."""
    import ray._private.state

    return ray._private.state.state.get_max_resources_from_cluster_config()


def node_ip_address() -> str:
    """ray._private.worker.global_worker.node_ip_address: the address this process's Ray node
    registered with (``ray start --node-ip-address``); raises when not connected to Ray."""
    import ray._private.worker

    return ray._private.worker.global_worker.node_ip_address


def token_loader():
    """ray._raylet.AuthenticationTokenLoader.instance(): Ray's C++ loader of its auth token."""
    from ray._raylet import AuthenticationTokenLoader

    return AuthenticationTokenLoader.instance()


def has_token() -> bool:
    """ray._raylet.AuthenticationTokenLoader.has_token(ignore_auth_mode=True): whether a Ray
    token is available (~/.ray/auth_token, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), whatever
    RAY_AUTH_MODE says. Looking it up loads it into Ray's C++ client, which then presents it."""
    return token_loader().has_token(ignore_auth_mode=True)


def reload_ray_config() -> None:
    """ray._raylet.Config.initialize(""): Ray's C++ config read again from the environment
    (RAY_AUTH_MODE among it, which Ray read when it was imported)."""
    from ray._raylet import Config

    Config.initialize("")


def gcs_client(address: str):
    """ray._raylet.GcsClient(address=..., cluster_id=None): a connection to the GCS at
    ``address`` (raises when it refuses one, e.g. for want of a token)."""
    from ray._raylet import GcsClient

    return GcsClient(address=address, cluster_id=None)
