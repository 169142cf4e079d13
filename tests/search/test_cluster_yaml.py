"""cluster.yaml is a valid Ray cluster-launcher config, checked by Ray's own schema validator."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validator():
    validate_config(prepare_config(copy.deepcopy(CONFIG)))


@pytest.mark.parametrize("path", [(), ("available_node_types", "head")])
def test_the_validator_rejects_unknown_keys(path):
    bad = copy.deepcopy(CONFIG)
    node = bad
    for key in path:
        node = node[key]
    node["not_a_ray_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_head_runs_the_driver_only_and_workers_scale_from_zero():
    nodes = CONFIG["available_node_types"]
    assert nodes[CONFIG["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [n for name, n in nodes.items() if name != CONFIG["head_node_type"]]
    assert workers and all(n["min_workers"] == 0 for n in workers)


def test_ssh_only_and_no_credentials_in_the_file():
    rules = CONFIG["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    text = (Path(__file__).parents[2] / "cluster.yaml").read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "secret", "password", "token"):
        assert secret not in text
    assert all("IamInstanceProfile" in n["node_config"] for n in CONFIG["available_node_types"].values())
    assert any("pip install" in c and "robust-arch-search" in c for c in CONFIG["setup_commands"])
