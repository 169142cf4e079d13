"""The boto3 client of an s3:// URI, reaching the endpoint pyarrow does, and how to read its
refusals: the lease object and the commit logs' entries are written with it, since pyarrow
cannot send conditional-write headers (it drops them silently)."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl

from space_defs.cli import UsageError

from . import uri as storage


def _code(error) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _refused(error) -> bool:
    """A conditional write the store refused: 412 (the condition does not hold) or 409
    ConditionalRequestConflict (AWS: a concurrent conditional write to the key; retry)."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in (409, 412) or _code(error) in ("PreconditionFailed", "ConditionalRequestConflict",
                                                    "412", "409")


def s3_client(uri: str, name: str = "", *, timeout: float = 10.0, attempts: int = 2):
    """(boto3 S3 client, bucket, key of ``name`` in the directory) for an s3:// URI, reaching the
    same endpoint pyarrow does: the URI's options (endpoint_override, scheme, region,
    tls_ca_file_path, tls_verify_certificates), else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and
    the usual AWS credential chain (an instance profile on a cluster)."""
    if not uri.startswith("s3://"):
        raise UsageError(f"cannot lock a sweep at {uri!r}: a driver lease needs a local path or "
                         "s3:// (conditional writes); choose --storage accordingly")
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UsageError("a sweep on s3:// needs boto3 for its driver lease: pip install boto3") from None
    fs, path = storage.resolve(uri)  # UsageError for a URI pyarrow refuses, as everywhere
    options = dict(parse_qsl(uri.partition("?")[2]))
    endpoint_url = None
    if options.get("endpoint_override"):
        endpoint = options["endpoint_override"]
        endpoint_url = endpoint if "://" in endpoint else f"{options.get('scheme', 'https')}://{endpoint}"
    custom = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    verify: bool | str | None = None
    if options.get("tls_ca_file_path"):
        verify = options["tls_ca_file_path"]
    if options.get("tls_verify_certificates", "").lower() in ("0", "false", "no"):
        verify = False
    config = Config(connect_timeout=max(1.0, timeout), read_timeout=max(1.0, timeout),
                    retries={"max_attempts": attempts, "mode": "standard"},
                    s3={"addressing_style": "path"} if custom else None,
                    # no CRC headers on a tiny JSON object: S3 clones that predate them refuse them
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=getattr(fs, "region", None) or None,
                          verify=verify, config=config)
    bucket, _, prefix = path.partition("/")
    return client, bucket, "/".join(p for p in (prefix.strip("/"), name) if p)
