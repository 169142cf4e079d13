"""search.internals against the installed Ray and Optuna: every private name the service uses
is exercised here on the real library object, so a release that renames or changes one fails
here (docs/DEPENDENCIES.md: how to move the pins). And no other module under search/ touches a
private name of either library."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from search import internals

ROOT = Path(__file__).resolve().parents[2]


# -- the module -------------------------------------------------------------------------------

def test_every_name_it_exports_is_tested_here_and_it_exports_every_public_name():
    public = {n for n in vars(internals) if not n.startswith("_")} - {"annotations", "Any"}
    assert set(internals.__all__) == public
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [n for n in internals.__all__ if not re.search(rf"\binternals\.{n}\b", source)]
    assert not untested, f"no test here uses {untested}"


def test_it_imports_no_ray_optuna_or_torch():
    code = ("import sys, search.internals; "
            "print(sorted(m for m in ('ray', 'optuna', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# -- Optuna -----------------------------------------------------------------------------------

@pytest.fixture
def journal(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(tmp_path / "optuna.journal"))
    return JournalStorage(backend), backend


def test_journal_ops_are_optunas_journal_operations_and_its_logs_carry_them(journal):
    import optuna
    from optuna.storages.journal._storage import JournalOperation

    assert internals.JOURNAL_OPS == {op.name: op.value for op in JournalOperation}
    storage, backend = journal
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, step=1)
    trial.set_user_attr("u", 1)
    study.tell(trial, 1.0)
    ops = {internals.JOURNAL_OPS[n] for n in ("CREATE_STUDY", "CREATE_TRIAL", "SET_TRIAL_PARAM",
                                              "SET_TRIAL_INTERMEDIATE_VALUE", "SET_TRIAL_USER_ATTR",
                                              "SET_TRIAL_STATE_VALUES")}
    assert ops <= {log["op_code"] for log in backend.read_logs(0)}


def test_a_studys_id_storage_and_its_trials_storage_ids(journal):
    import optuna

    storage, _ = journal
    study = optuna.create_study(storage=storage, study_name="s")
    asked = study.ask()
    assert internals.study_storage(study) is storage  # what StudySearch flushes
    [frozen] = storage.get_all_trials(internals.study_id(study), deepcopy=False)
    assert internals.storage_trial_id(frozen) == internals.storage_trial_id(asked)
    assert storage.get_trial(internals.storage_trial_id(asked)).number == asked.number
    assert storage.get_study_id_from_name("s") == internals.study_id(study)
    [frozen_study] = storage.get_all_studies()  # how the grid replay finds it
    assert internals.study_id(frozen_study) == internals.study_id(study)


def test_the_journal_backend_of_a_journal_storage_and_none_of_another(journal):
    import optuna

    storage, backend = journal
    assert internals.journal_backend(storage) is backend
    assert internals.journal_backend(optuna.storages.InMemoryStorage()) is None


# -- Ray Tune: searchers ----------------------------------------------------------------------

def test_optuna_searchs_study_its_trials_and_those_it_told_the_end_of(journal):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage, _ = journal
    searcher = OptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0, 1)} and None,
                            metric="m", mode="max", study_name="s", storage=storage)
    config = searcher.suggest("tune-1")
    study = internals.ot_study(searcher)
    assert isinstance(study, optuna.Study) and study.study_name == "s"
    assert internals.study_storage(study) is storage
    asked = internals.ot_trials(searcher)["tune-1"]
    assert isinstance(asked, optuna.Trial) and config == {"x": asked.params["x"]}
    assert internals.completed_trials(searcher) == set()
    searcher.on_trial_complete("tune-1", {"m": 0.5})
    assert "tune-1" in internals.completed_trials(searcher)
    assert storage.get_trial(internals.storage_trial_id(asked)).state == optuna.trial.TrialState.COMPLETE
    # StudySearch adds to the set itself: OptunaSearch then ignores the trial's end
    searcher.suggest("tune-2")
    internals.completed_trials(searcher).add("tune-2")
    searcher.on_trial_complete("tune-2", {"m": 0.7})
    assert storage.get_trial(internals.storage_trial_id(internals.ot_trials(searcher)["tune-2"])
                             ).state == optuna.trial.TrialState.RUNNING


def test_a_search_generators_experiment_and_where_it_creates_trials(tmp_path):
    import pyarrow.fs as pafs
    from ray import tune
    from ray.tune.search import SearchGenerator, Searcher

    class One(Searcher):
        def suggest(self, trial_id):
            return {}

    generator = SearchGenerator(One())
    experiment = tune.Experiment("e", run=lambda config: None, storage_path=str(tmp_path))
    generator.add_configurations([experiment])
    got = internals.generator_experiment(generator)
    assert got is experiment
    # what SweepSearch moves: the storage the generator's new trials get
    assert got.spec["storage"] is got.storage
    assert got.storage.experiment_dir_name == "e" and got.storage.storage_fs_path == str(tmp_path)
    # and what search.tune.tune_state reads and sets on a trial's (the same class's)
    assert isinstance(got.storage.storage_filesystem, pafs.LocalFileSystem)
    assert got.storage.current_checkpoint_index == -1
    restored = SearchGenerator(One())
    restored.set_state(generator.get_state())  # Tune's snapshot, as SweepSearch.set_state has it
    assert internals.generator_experiment(restored) is experiment


# -- Ray Tune: schedulers, trials, results ----------------------------------------------------

def test_ashas_milestones_are_the_rungs_of_its_brackets():
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=80, grace_period=5,
                         reduction_factor=3)
    assert internals.asha_milestones(asha) == (5, 15, 45)
    two = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=80, grace_period=5,
                        reduction_factor=4, brackets=2)
    assert internals.asha_milestones(two) == (5, 20, 80)  # the second bracket's first rung: max_t


def test_a_trials_checkpoint_manager_read_and_set(tmp_path):
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.experiment import Trial

    def result(n):
        path = tmp_path / f"checkpoint_{n:06d}"
        path.mkdir()
        return internals.training_result(Checkpoint.from_directory(str(path)), {"epoch": n})

    trial = Trial("fn", stub=True, checkpoint_config=CheckpointConfig(num_to_keep=2))
    manager = trial.run_metadata.checkpoint_manager  # what search.sweep.tune_state reads
    assert internals.checkpoint_results(manager) == [] and internals.latest_checkpoint_result(manager) is None
    made = [result(n) for n in range(3)]
    for r in made:
        manager.register_checkpoint(r)
    assert internals.checkpoint_results(manager) == made[1:]  # the oldest deleted
    assert internals.latest_checkpoint_result(manager) is made[2]
    assert internals.latest_checkpoint_result(manager).metrics == {"epoch": 2}
    assert not (tmp_path / "checkpoint_000000").exists()

    internals.set_checkpoint_results(manager, made[1:2], made[1])  # checkpoint 2 forgotten
    assert internals.checkpoint_results(manager) == [made[1]]
    assert internals.latest_checkpoint_result(manager) is made[1]
    trial.run_metadata.invalidate_cache()
    assert trial.checkpoint.path == made[1].checkpoint.path  # the one the trial resumes from
    manager.register_checkpoint(new := result(3))
    assert internals.checkpoint_results(manager) == [made[1], new]
    assert internals.latest_checkpoint_result(manager) is new
    assert (tmp_path / "checkpoint_000002").exists()  # forgotten: Tune no longer deletes it


# -- Ray core (and a ResultGrid), with a real embedded Ray in a process of its own -----------

_WITH_RAY = r"""
import json, os, sys, tempfile
os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
from search import internals
out = {"has_token": internals.has_token(), "loader": type(internals.token_loader()).__name__}
internals.reload_ray_config()
import ray
from ray import tune
try:
    internals.node_ip_address()
    out["unconnected"] = "answered"
except Exception as e:
    out["unconnected"] = type(e).__name__
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
try:
    out["node_ip"], out["public_ip"] = internals.node_ip_address(), ray.util.get_node_ip_address()
    out["max_resources"] = internals.cluster_config_max_resources()
    out["head"] = [internals.HEAD_NODE_RESOURCE in n["Resources"] for n in ray.nodes()]
    out["gcs"] = type(internals.gcs_client(ray.get_runtime_context().gcs_address)).__name__
    def fn(config):
        tune.report({"x": config["x"]})
    grid = tune.Tuner(fn, param_space={"x": tune.grid_search([1, 2])},
                      run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
    out["trials"] = sorted((t.trial_id, t.status) for t in internals.experiment_trials(grid))
    out["results"] = sorted(r.metrics["trial_id"] for r in grid)
finally:
    ray.shutdown()
print("OUT" + json.dumps(out))
"""


def test_ray_core_and_a_result_grid_with_an_embedded_ray():
    import os
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # its own: never a cluster a sweep may join
    try:
        out = subprocess.run([sys.executable, "-c", _WITH_RAY], capture_output=True, text=True,
                             cwd=ROOT, timeout=240, env={**os.environ, "RAY_TMPDIR": temp})
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("OUT")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    got = json.loads(lines[-1][3:])
    assert got["has_token"] is True  # tests/conftest.py's RAY_AUTH_TOKEN_PATH
    assert got["loader"] == "AuthenticationTokenLoader"
    assert got["unconnected"] != "answered"  # Ray's own guess is the caller's fallback
    assert got["node_ip"] == got["public_ip"]
    assert got["max_resources"] is None  # no autoscaler published a cluster config
    assert got["head"] == [True]
    assert got["gcs"] == "GcsClient"
    assert [status for _, status in got["trials"]] == ["TERMINATED", "TERMINATED"]
    assert [trial_id for trial_id, _ in got["trials"]] == got["results"]


def test_ray_names_its_head_resource_and_runs_its_autoscaler_as_the_scripts_named():
    import ray
    from ray._common.constants import HEAD_NODE_RESOURCE_NAME

    assert internals.HEAD_NODE_RESOURCE == HEAD_NODE_RESOURCE_NAME
    package = Path(ray.__file__).parent
    for script in internals.AUTOSCALER_MONITORS:
        text = (package / script).read_text(encoding="utf-8")
        # search.cluster.target reads these flags of its command line
        assert '"--gcs-address"' in text and '"--autoscaling-config"' in text, script


def test_the_ray_private_entry_points_take_what_the_service_passes():
    """Where they are, in this process (the calls themselves, which need a Ray or change Ray's
    C++ state: test_ray_core_and_a_result_grid_with_an_embedded_ray)."""
    import inspect

    import ray._private.state
    import ray._private.worker
    from ray._raylet import AuthenticationTokenLoader, Config, GcsClient

    assert isinstance(inspect.getattr_static(type(ray._private.worker.global_worker), "node_ip_address"),
                      property)
    assert callable(ray._private.state.state.get_max_resources_from_cluster_config)
    assert callable(AuthenticationTokenLoader.instance) and callable(AuthenticationTokenLoader.has_token)
    assert callable(Config.initialize) and isinstance(GcsClient, type)


# -- nobody else touches them -------------------------------------------------------------------

PACKAGES = ("search", "trainer", "space_defs")
# the private names of Ray and Optuna that search.internals reaches: nobody else names them
MOVED = {"_ot_study", "_ot_trials", "_completed_trials", "_experiment", "_storage", "_trial_id",
         "_study_id", "_backend", "_brackets", "_rungs", "_checkpoint_results",
         "_latest_checkpoint_result", "_TrainingResult", "_experiment_analysis"}
PRIVATE_WORD = re.compile(r"(?<![A-Za-z0-9])_+(private|internal|raylet)(?![A-Za-z0-9])")
LIBRARIES = ("ray", "optuna")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names() -> tuple[set[str], set[str]]:
    """The private names the project's packages define themselves (functions, classes,
    assigned names and attributes, arguments, import aliases), and their classes' names."""
    names, classes = set(), set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    classes.add(node.name)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.arg):
                    names.add(node.arg)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.alias):
                    names.add((node.asname or node.name).split(".")[0])
    return {n for n in names if _private(n)} - MOVED, classes


def violations(source: str, own: set[str], classes: set[str] = frozenset()) -> list[str]:
    """Where ``source`` touches a private name of Ray or Optuna: an import of a private module
    or name of theirs; the words _private, _internal, _raylet (module paths, file paths,
    Ray's __internal_head__); a name of MOVED; ``x._name`` for a private name the project does
    not define (``self._name`` too, in a class with a base from outside the project, where
    the class itself does not define it), or the same through getattr/setattr/hasattr."""
    tree = ast.parse(source)
    found = [f"{m.group(0)!r} at line {source[:m.start()].count(chr(10)) + 1}"
             for m in PRIVATE_WORD.finditer(source)]
    modules = set()  # names bound to imported modules other than Ray's and Optuna's
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIBRARIES and any(map(_private, parts)):
                    found.append(f"import {alias.name} at line {node.lineno}")
                if parts[0] not in LIBRARIES:
                    modules.add(alias.asname or parts[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] in LIBRARIES and (any(map(_private, parts))
                                          or any(_private(a.name) for a in node.names)):
                found.append(f"from {node.module} import ... at line {node.lineno}")
    own_in_class: dict[int, set[str]] = {}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        local = {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)} | classes
        foreign = any(not (isinstance(b, ast.Name) and b.id in local) for b in cls.bases)
        defined = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        defined |= {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)
                    and isinstance(n.ctx, ast.Store)}
        defined |= {t.id for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                    if isinstance(t, ast.Name)}
        for node in ast.walk(cls):
            if foreign:
                own_in_class.setdefault(id(node), set()).update(defined | {"<foreign>"})
    for node in ast.walk(tree):
        name = value = None
        if isinstance(node, ast.Attribute):
            name, value = node.attr, node.value
        elif isinstance(node, ast.Name):
            if node.id in MOVED:
                found.append(f"{node.id} at line {node.lineno}")
            continue
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name, value = node.args[1].value, node.args[0]
        if name is None or not _private(name):
            continue
        if name in MOVED:
            found.append(f".{name} at line {node.lineno}")
            continue
        root = value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            in_class = own_in_class.get(id(node))
            if in_class is not None and name not in in_class and name not in own:
                found.append(f"{value.id}.{name} (a base class's) at line {node.lineno}")
        elif isinstance(root, ast.Name) and root.id in modules:
            continue  # os._exit and the like
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
            if name not in own:
                found.append(f"super().{name} at line {node.lineno}")
        elif name not in own:
            found.append(f".{name} at line {node.lineno}")
    return found


def test_the_scan_finds_what_it_looks_for():
    own = {"_mine"}
    sample = '''
import os
import ray._private.state
from ray.train._internal.checkpoint_manager import _TrainingResult
from optuna.storages.journal._storage import JournalOperation
from ray.tune.search.optuna import OptunaSearch

class S(OptunaSearch):
    def f(self):
        self._mine2 = 1
        return self._ot_study, self._told, self._mine2, self._mine
    def _told(self):
        return getattr(self.x, "_backend", None), super()._secret(), os._exit(2)

def g(results, study):
    return results._experiment_analysis, study._study_id, results._unknown, study._mine
'''
    found = " / ".join(violations(sample, own))
    for expected in ("'_private' at line 3", "'_internal' at line 4", "import ray._private.state",
                     "from ray.train._internal.checkpoint_manager", "from optuna.storages.journal._storage",
                     "._ot_study at line 11", "._backend at line 13", "super()._secret at line 13",
                     "._experiment_analysis at line 16", "._study_id at line 16", "._unknown at line 16"):
        assert expected in found, (expected, found)
    for fine in ("_told ", "_mine2", "_mine ", "_exit"):
        assert fine not in found + " ", (fine, found)


def test_no_module_of_search_but_internals_touches_a_private_name_of_ray_or_optuna():
    own, classes = _own_names()
    touched = {}
    for path in sorted((ROOT / "search").rglob("*.py")):
        if path == ROOT / "search" / "internals.py":
            continue
        if found := violations(path.read_text(encoding="utf-8"), own, classes):
            touched[str(path.relative_to(ROOT))] = found
    assert not touched, ("reach Ray's and Optuna's private names through search.internals: "
                         + json.dumps(touched, indent=1))
