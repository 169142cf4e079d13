"""A local EC2/IAM API for Ray's AWS launcher code: the moto server of tests/harness/s3.py (one
server answers every AWS service), reached through AWS_ENDPOINT_URL, with the account set up as
docs/CLUSTER.md says: the two roles with docs/iam-trust-policy.json, their policies from
docs/iam-*-policy.json, and their instance profiles.

    from tests.harness.aws import aws_account, s3_server  # noqa: F401  (pytest fixtures)

    def test_x(aws_account):          # AwsAccount: boto3 clients, cluster.yaml filled in
        config = aws_account.cluster_config()

``aws_account`` (per test) points boto3 (and so Ray's launcher) at the server with dummy keys
and cluster.yaml's region, gives the test a HOME of its own (Ray writes the SSH key pair it
creates under ~/.ssh), and clears Ray's cached boto3 clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .s3 import ENV, S3Server, s3_server  # noqa: F401  (the server fixture, re-exported)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
ROLES = {"robust-arch-search-head": "iam-head-policy.json",
         "robust-arch-search-worker": "iam-worker-policy.json"}
BUCKET = "sweeps-bucket"


@dataclass
class AwsAccount:
    server: S3Server
    region: str
    home: Path

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name=self.region)

    @property
    def account_id(self) -> str:
        return self.client("sts").get_caller_identity()["Account"]

    def create_roles(self) -> None:
        """docs/CLUSTER.md's one-time IAM setup: per role, `aws iam create-role` with the trust
        policy, `put-role-policy` with its policy, an instance profile holding the role."""
        iam = self.client("iam")
        trust = (ROOT / "docs" / "iam-trust-policy.json").read_text()
        for role, policy in ROLES.items():
            if any(r["RoleName"] == role for r in iam.list_roles()["Roles"]):
                continue
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
            iam.put_role_policy(RoleName=role, PolicyName=role, PolicyDocument=self.fill(
                (ROOT / "docs" / policy).read_text()))
            iam.create_instance_profile(InstanceProfileName=role)
            iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)

    def fill(self, text: str) -> str:
        """cluster.yaml's and the policies' placeholders, as a user fills them in."""
        return text.replace("ACCOUNT", self.account_id).replace("YOUR-BUCKET", BUCKET)

    def cluster_config(self, **changes) -> dict:
        """cluster.yaml as shipped, placeholders filled; ``changes`` replace top-level keys."""
        config = yaml.safe_load(self.fill(CLUSTER_YAML.read_text()))
        config.update(changes)
        return config


@pytest.fixture
def aws_account(s3_server, monkeypatch, tmp_path) -> AwsAccount:
    region = yaml.safe_load(CLUSTER_YAML.read_text())["provider"]["region"]
    for name, value in {**ENV, "AWS_REGION": region, "AWS_DEFAULT_REGION": region,
                        "AWS_ENDPOINT_URL": s3_server.url, "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    _forget_rays_clients()  # Ray caches boto3 clients per region: not this test's endpoint
    account = AwsAccount(s3_server, region, tmp_path)
    account.create_roles()
    yield account
    _forget_rays_clients()


def _forget_rays_clients() -> None:
    from ray.autoscaler._private.aws import config, utils

    for cached in (utils.client_cache, utils.resource_cache, config._get_subnets_or_die):
        cached.cache_clear()
