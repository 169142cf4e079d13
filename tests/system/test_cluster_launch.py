"""`ray up cluster.yaml` up to the point where SSH takes over, with Ray's own AWS code against a
local EC2/IAM API (moto's server, tests/harness/aws.py): cluster.yaml as shipped (placeholders
filled), `ray up`'s own config step (commands._bootstrap_config: prepare, validate, Ray's AWS
bootstrap: key pair, subnets, security group, instance profiles), the head node launched as
`ray up` launches it, and spot GPU workers of every type launched by the autoscaler's own
NodeLauncher. What EC2 then holds is checked: the group and its inbound rules, instance types,
AMI, profiles, disks, spot market, tags. Not exercised here: SSH to the nodes, docker, the
nodes' boot (initialization, setup and start commands), and EC2's resolution of the AMI
parameter (moto keeps the `resolve:ssm:` string as given)."""

from __future__ import annotations

import copy

import botocore.exceptions
import pytest
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.event_summarizer import EventSummarizer
from ray.autoscaler._private.node_launcher import BaseNodeLauncher
from ray.autoscaler._private.node_provider_availability_tracker import (
    NodeProviderAvailabilityTracker,
)
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler._private.util import ConcurrentCounter, hash_launch_conf
from ray.autoscaler.tags import (NODE_KIND_HEAD, STATUS_UNINITIALIZED, TAG_RAY_CLUSTER_NAME,
                                 TAG_RAY_LAUNCH_CONFIG, TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME,
                                 TAG_RAY_NODE_STATUS, TAG_RAY_USER_NODE_TYPE)

from tests.harness.aws import aws_account, s3_server  # noqa: F401  (fixtures)

SSH_FROM_ANYWHERE = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                     "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


def launch_head(config: dict, provider: AWSNodeProvider) -> None:
    """The head, as `ray up` launches it (commands.get_or_create_head_node): the head type's
    node_config over the bootstrap's `head_node` fields, tagged with its launch hash."""
    node_config = copy.deepcopy(config.get("head_node", {}))
    node_config.update(config["available_node_types"][config["head_node_type"]]["node_config"])
    provider.create_node(node_config, {
        TAG_RAY_NODE_KIND: NODE_KIND_HEAD, TAG_RAY_USER_NODE_TYPE: config["head_node_type"],
        TAG_RAY_LAUNCH_CONFIG: hash_launch_conf(node_config, config["auth"]),
        TAG_RAY_NODE_NAME: f"ray-{config['cluster_name']}-head",
        TAG_RAY_NODE_STATUS: STATUS_UNINITIALIZED}, 1)


def launch_worker(config: dict, provider: AWSNodeProvider, node_type: str) -> dict:
    """One worker of ``node_type``, launched by the autoscaler's own launcher."""
    pending = ConcurrentCounter()
    pending.inc(node_type, 1)
    launcher = BaseNodeLauncher(provider, pending, EventSummarizer(),
                                NodeProviderAvailabilityTracker(),
                                node_types=config["available_node_types"])
    return launcher.launch_node(config, 1, node_type)


def instances(account, cluster_name: str) -> dict[str, dict]:
    """The cluster's instances by their Ray node type."""
    found = account.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{TAG_RAY_CLUSTER_NAME}", "Values": [cluster_name]}])
    by_type = {}
    for reservation in found["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
            by_type[tags[TAG_RAY_USER_NODE_TYPE]] = {**instance, "tags": tags}
    return by_type


def root_volume(account, instance: dict) -> dict:
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return account.client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def test_ray_up_and_the_autoscaler_launch_cluster_yaml_on_ec2(aws_account):
    shipped = aws_account.cluster_config()
    config = _bootstrap_config(copy.deepcopy(shipped), no_config_cache=True)
    again = _bootstrap_config(copy.deepcopy(shipped), no_config_cache=True)  # a rerun of `ray up`
    assert again["available_node_types"] == config["available_node_types"]

    ec2 = aws_account.client("ec2")
    group_name = shipped["provider"]["security_group"]["GroupName"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [group_name]}])["SecurityGroups"]
    assert len(groups) == 1
    group = groups[0]
    rules = group["IpPermissions"]
    assert len(rules) == 2  # within the group (Ray's ports), and Ray's SSH rule
    inside = next(r for r in rules if r["IpProtocol"] == "-1")
    assert [p["GroupId"] for p in inside["UserIdGroupPairs"]] == [group["GroupId"]]
    ssh = next(r for r in rules if r["IpProtocol"] == "tcp")
    assert (ssh["FromPort"], ssh["ToPort"], ssh["IpRanges"]) == (22, 22, [{"CidrIp": "0.0.0.0/0"}])

    provider = AWSNodeProvider(config["provider"], config["cluster_name"])
    launch_head(config, provider)
    workers = [name for name in config["available_node_types"] if name != config["head_node_type"]]
    for node_type in workers:
        assert len(launch_worker(config, provider, node_type)) == 1, node_type

    launched = instances(aws_account, config["cluster_name"])
    assert set(launched) == {config["head_node_type"], *workers}
    key_name = config["available_node_types"][config["head_node_type"]]["node_config"]["KeyName"]
    assert (aws_account.home / ".ssh" / f"{key_name}.pem").exists()  # Ray's key pair, for SSH
    for node_type, instance in launched.items():
        want = shipped["available_node_types"][node_type]["node_config"]
        assert instance["InstanceType"] == want["InstanceType"]
        assert instance["ImageId"] == want["ImageId"]  # passed to RunInstances as written
        assert want["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/")
        assert instance["IamInstanceProfile"]["Arn"] == want["IamInstanceProfile"]["Arn"]
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
        assert instance["KeyName"] == key_name
        volume = root_volume(aws_account, instance)
        disk = want["BlockDeviceMappings"][0]
        assert instance["BlockDeviceMappings"][0]["DeviceName"] == disk["DeviceName"]
        assert (volume["Size"], volume["VolumeType"]) == (disk["Ebs"]["VolumeSize"],
                                                          disk["Ebs"]["VolumeType"])
        assert instance["Placement"]["AvailabilityZone"] in shipped["provider"]["availability_zone"]
        kind = instance["tags"][TAG_RAY_NODE_KIND]
        if node_type == config["head_node_type"]:
            assert kind == "head" and instance.get("InstanceLifecycle") is None  # on demand
            assert instance["IamInstanceProfile"]["Arn"].endswith("/robust-arch-search-head")
        else:
            assert kind == "worker" and instance["InstanceLifecycle"] == "spot"
            assert instance["IamInstanceProfile"]["Arn"].endswith("/robust-arch-search-worker")


def test_an_ssh_rule_in_the_config_repeats_rays_own_and_fails_the_group(aws_account):
    """What cluster.yaml shipped before: Ray adds SSH from 0.0.0.0/0 itself, in one call with
    the config's rules, so the same rule in IpPermissions is a duplicate EC2 refuses."""
    config = aws_account.cluster_config(cluster_name="ssh-rule-repeated")
    config["provider"]["security_group"] = {"GroupName": "ssh-rule-repeated",
                                            "IpPermissions": [SSH_FROM_ANYWHERE]}
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidPermission.Duplicate"):
        _bootstrap_config(config, no_config_cache=True)


def test_a_precreated_group_restricts_ssh_and_ray_creates_none(aws_account):
    """docs/CLUSTER.md's way to allow SSH from one address range only."""
    ec2 = aws_account.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    group_id = ec2.create_security_group(GroupName="ras-ssh-from-office", VpcId=vpc["VpcId"],
                                         Description="SSH from one range, all within")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "203.0.113.0/24"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}])
    config = aws_account.cluster_config(cluster_name="ssh-restricted")
    config["provider"]["security_group"] = {"GroupName": "ssh-restricted-unused"}
    for node_type in config["available_node_types"].values():
        node_type["node_config"]["SecurityGroupIds"] = [group_id]
    config = _bootstrap_config(config, no_config_cache=True)
    assert not ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": ["ssh-restricted-unused"]}])["SecurityGroups"]
    provider = AWSNodeProvider(config["provider"], config["cluster_name"])
    launch_head(config, provider)
    head = instances(aws_account, "ssh-restricted")[config["head_node_type"]]
    assert [g["GroupId"] for g in head["SecurityGroups"]] == [group_id]
    rules = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"]
    assert {r.get("FromPort") for r in rules} == {22, None}
    assert all(r["IpRanges"] != [{"CidrIp": "0.0.0.0/0"}] for r in rules)
