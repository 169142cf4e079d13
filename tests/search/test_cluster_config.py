"""cluster.yaml, read as Ray reads it: Ray's own validator accepts it; one image with Ray at this
checkout's version and torch's pinned CUDA build (the image's build fails on another); the
project installed from the synced checkout without a dependency install; token auth on every
node; GPU spot workers from zero with declared resources; idle timeout; every tracked file
synced, so provenance on the nodes is as clean as the checkout; no SSH rule of its own (Ray adds
one); no secrets in any file; the head's IAM policy grants what the autoscaler calls. The fake
cluster's config, derived from it, passes the validator the autoscaler itself runs. (The launch
on EC2's API: test_cluster_launch.py.)"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from search.db.provenance import code_version
from tests.harness.fake_cluster import fake_config

ROOT = Path(__file__).parents[2]
TEXT = (ROOT / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(TEXT)
NODES = CONFIG["available_node_types"]
HEAD = NODES[CONFIG["head_node_type"]]
WORKERS = {name: n for name, n in NODES.items() if name != CONFIG["head_node_type"]}


def test_rays_validator_accepts_it_and_rejects_an_unknown_key():
    validate_config(prepare_config(copy.deepcopy(CONFIG)))
    bad = copy.deepcopy(CONFIG)
    bad["docker"]["not_a_ray_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_the_head_takes_no_trials_and_gpu_spot_workers_scale_from_zero():
    assert HEAD["resources"] == {"CPU": 0}
    assert WORKERS and CONFIG["idle_timeout_minutes"] > 0
    for node in WORKERS.values():
        assert node["min_workers"] == 0 and node["max_workers"] > 0
        assert node["resources"].get("GPU", 0) >= 1 and node["resources"].get("CPU", 0) >= 1
        assert node["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_one_image_with_rays_version_of_this_checkout_and_no_dependency_install_at_boot():
    image = CONFIG["docker"]["image"]
    assert f"ray{ray.__version__}-py311" in image  # the image is built for this Ray
    setup = " ".join(CONFIG["setup_commands"])
    assert "pip install" in setup and "--no-deps" in setup and "~/robust-arch-search" in setup
    assert f"ray.__version__ != '{ray.__version__}'" in setup  # a node with another Ray refuses
    dockerfile = (ROOT / "docs" / "cluster.Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}" in dockerfile and "py311-gpu" in dockerfile
    assert "docker build -f docs/cluster.Dockerfile" in dockerfile  # its own path


DOCKERFILE = (ROOT / "docs" / "cluster.Dockerfile").read_text()


def docker_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE, re.M))


def test_the_image_pins_torch_and_its_cuda_build_as_pyproject_and_this_checkout_do():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(m.groups() for d in dependencies if (m := re.fullmatch(r"(torch|torchvision)==(\S+)", d)))
    args = docker_args()
    assert (args["TORCH_VERSION"], args["TORCHVISION_VERSION"]) == (pins["torch"], pins["torchvision"])
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in DOCKERFILE
    assert f"torch{pins['torch']}" in CONFIG["docker"]["image"]
    # the build installed here (torch/version.py, read without importing torch: seconds)
    version = runpy.run_path(str(Path(importlib.util.find_spec("torch").origin).parent / "version.py"))
    assert version["__version__"] == f"{pins['torch']}+{args['TORCH_CUDA']}"
    assert args["TORCH_CUDA"] == "cu" + version["cuda"].replace(".", "")


@pytest.mark.parametrize("cuda, builds", [("pinned", True), ("cu129", False)])
def test_the_image_build_fails_when_torch_is_not_the_pinned_cuda_build(cuda, builds):
    """The build's last step, run against this checkout's torch (the pinned build) with the
    pinned TORCH_CUDA and with others."""
    check = re.search(r'python -c "(.*?)"\s*$', DOCKERFILE, re.S).group(1).replace("\\\n", "")
    args = docker_args()
    if cuda != "pinned":
        args["TORCH_CUDA"] = cuda
    for name, value in args.items():
        check = check.replace("${" + name + "}", value)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert (out.returncode == 0) == builds, out.stderr[-2000:]
    if not builds:
        assert f"not {cuda}" in out.stderr


def test_token_auth_on_every_node_and_the_driver():
    assert "--env RAY_AUTH_MODE=token" in CONFIG["docker"]["run_options"]
    assert CONFIG["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def excluded(path: str) -> bool:
    """Whether `ray up`'s rsync leaves ``path`` (relative to the checkout) out: a pattern without
    a slash is matched against each name on the path, and an excluded directory's whole tree
    stays behind (rsync's rule; the test below keeps the patterns to that form)."""
    return any(fnmatch.fnmatch(part, pattern) for part in Path(path).parts
               for pattern in CONFIG["rsync_exclude"])


def tracked_files(root: Path) -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_the_checkout_is_synced_whole_but_for_what_git_never_tracks():
    assert CONFIG["file_mounts"]["~/robust-arch-search"] == "."
    assert not CONFIG.get("rsync_filter")  # .gitignore as an rsync filter drops tracked data/
    assert all("/" not in pattern for pattern in CONFIG["rsync_exclude"])
    for name in (".venv", "runs", "__pycache__", "x.egg-info", ".pytest_cache", "replay"):
        assert excluded(name) and excluded(f"sub/{name}/file")
    assert not excluded(".git/HEAD")  # synced: trials record its commit
    tracked = tracked_files(ROOT)
    assert "data/digits-grid-60K/record.sh" in tracked
    assert [path for path in tracked if excluded(path)] == []


def test_provenance_on_a_node_is_as_clean_as_the_checkout_it_was_synced_from(tmp_path):
    """A clean checkout (a clone of this commit), copied as `ray up` syncs it: the copy's
    code_version is the checkout's, without "-dirty"; and leaving a tracked file behind, as
    the old `**/data` exclude did, makes it "-dirty"."""
    checkout, node = tmp_path / "checkout", tmp_path / "node"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(checkout)], check=True, timeout=120)
    (checkout / "runs").mkdir()
    (checkout / "runs" / "left-behind.txt").write_text("a sweep's local output")
    shutil.copytree(checkout, node, symlinks=True,
                    ignore=lambda d, names: [n for n in names if excluded(n)])
    assert not (node / "runs").exists() and (node / "data" / "digits-grid-60K").is_dir()
    version = code_version(checkout)
    assert not version.endswith("-dirty") and code_version(node) == version
    (node / "data" / "digits-grid-60K" / "record.sh").unlink()
    code_version.cache_clear()
    assert code_version(node) == version + "-dirty"


def test_no_inbound_rule_of_its_own_dashboard_on_localhost_and_no_secret_in_any_file():
    """Ray's group gets SSH from anywhere and the group's own traffic, from Ray alone: a rule
    here would repeat Ray's (test_cluster_launch.py shows EC2 refusing it)."""
    assert "IpPermissions" not in CONFIG["provider"]["security_group"]
    assert "--dashboard-host=127.0.0.1" in " ".join(CONFIG["head_start_ray_commands"])
    files = [TEXT, *(p.read_text() for p in (ROOT / "docs").glob("iam-*.json")), DOCKERFILE]
    for text in files:
        assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
        assert not re.search(r"\b[0-9a-f]{32,}\b", text)  # a token-like hex string
        assert "aws_secret_access_key" not in text.lower()
    assert all("IamInstanceProfile" in n["node_config"] for n in NODES.values())


def _statements(name: str) -> list[dict]:
    policy = json.loads((ROOT / "docs" / name).read_text())
    assert policy["Version"] == "2012-10-17"
    return policy["Statement"]


def _actions(statements) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow"
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_the_head_policy_lets_the_autoscaler_launch_tag_and_terminate_workers():
    actions = _actions(_statements("iam-head-policy.json"))
    for needed in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:DescribeInstances",
                   "ec2:DescribeInstanceTypes", "ec2:DescribeImages", "ec2:CreateTags",
                   "iam:PassRole", "s3:PutObject", "s3:GetObject", "s3:ListBucket",
                   "s3:DeleteObject", "ecr:GetAuthorizationToken", "ecr:BatchGetImage"):
        assert needed in actions
    passrole = [s for s in _statements("iam-head-policy.json") if "iam:PassRole" in s["Action"]]
    assert all("robust-arch-search-worker" in s["Resource"] for s in passrole)  # that role only
    worker = _actions(_statements("iam-worker-policy.json"))
    assert "s3:PutObject" in worker and not any(a.startswith(("ec2:", "iam:")) for a in worker)


def test_the_fake_clusters_config_derives_from_it_and_passes_the_autoscalers_validator():
    config = fake_config(ROOT / "cluster.yaml", gcs_address="127.0.0.1:6379")
    validate_config(config)  # the monitor validates its config like this, unprepared
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    gpu_types = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert set(gpu_types) == set(WORKERS)
    assert all(t["min_workers"] == 0 and t["max_workers"] == 2 and t["resources"]["GPU"] == 1
               for t in gpu_types.values())
