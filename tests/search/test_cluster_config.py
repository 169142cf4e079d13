"""cluster.yaml would bring up a working cluster: Ray's own validator accepts it; one image with
Ray at this checkout's version; the project installed from the synced checkout without a
dependency install; token auth on every node; GPU spot workers from zero with declared
resources; idle timeout; rsync excludes; no secrets in any file; the head's IAM policy grants
what the autoscaler calls. The fake cluster's config, derived from it, passes the validator the
autoscaler itself runs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

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


def test_token_auth_on_every_node_and_the_driver():
    assert "--env RAY_AUTH_MODE=token" in CONFIG["docker"]["run_options"]
    assert CONFIG["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_the_checkout_is_synced_without_venv_runs_or_data():
    assert CONFIG["file_mounts"]["~/robust-arch-search"] == "."
    excluded = " ".join(CONFIG["rsync_exclude"])
    for name in (".venv", "runs", "data", "__pycache__"):
        assert name in excluded
    assert ".gitignore" in CONFIG["rsync_filter"]
    assert not any(".git" == e.strip("*/") for e in CONFIG["rsync_exclude"])  # commit recorded


def test_ssh_only_dashboard_on_localhost_and_no_secret_in_any_file():
    rules = CONFIG["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert "--dashboard-host=127.0.0.1" in " ".join(CONFIG["head_start_ray_commands"])
    files = [TEXT, *(p.read_text() for p in (ROOT / "docs").glob("iam-*.json")),
             (ROOT / "docs" / "cluster.Dockerfile").read_text()]
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
