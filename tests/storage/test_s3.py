"""The S3 stores on what the contract suites cannot say: SigV4 presigned URLs checked by a real
service (SeaweedFS) and used by a plain HTTP client, the SHA-256 kept beside the bytes, errors
of a service that is down, missing or refusing, and the configuration from a URL and the
environment."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import botocore.auth
import httpx
import pytest

from offmaps.errors import (
    BlobIntegrityError,
    InvalidBlobKeyError,
    InvalidObjectKeyError,
    StorageError,
    StorageUnavailableError,
)
from offmaps.storage import S3BlobStore, S3Config, S3ObjectStore
from tests.s3kit import BUCKET, FOREIGN, FOREIGN_BUCKET, bucket_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DATA = b"offline maps, online edits"
SHA = hashlib.sha256(DATA).hexdigest()
MINUTE = timedelta(minutes=1)


@pytest.fixture
def objects(s3_config: S3Config) -> S3ObjectStore:
    store = S3ObjectStore(s3_config)
    store.put("tiles/3/4/2.png", DATA)
    return store


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced (the rest kept in their order)."""
    parts = urlsplit(url)
    pairs = [pair.split("=", 1) for pair in parts.query.split("&")]
    query_text = "&".join(
        f"{name}={quote(changes[name], safe='') if name in changes else value}"
        for name, value in pairs
    )
    return parts._replace(query=query_text).geturl()


# --- presigned URLs, checked by SeaweedFS ---------------------------------------------------------


def test_a_presigned_get_fetches_the_object(objects: S3ObjectStore) -> None:
    url = objects.presign_get("tiles/3/4/2.png", MINUTE)
    assert (url.method, url.key) == ("GET", "tiles/3/4/2.png")
    signed = query(url.url)
    assert signed["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"  # SigV4, not SigV2
    assert signed["X-Amz-SignedHeaders"] == "host"
    assert url.expires_at == datetime.strptime(signed["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC
    ) + timedelta(seconds=60)
    assert url.url.startswith(f"{objects.config.endpoint_url}/{BUCKET}/{objects.config.prefix}")
    answer = httpx.get(url.url)
    assert answer.status_code == 200
    assert answer.content == DATA


def test_a_presigned_put_stores_the_object(objects: S3ObjectStore) -> None:
    url = objects.presign_put("uploads/new tile.png", MINUTE)
    assert httpx.put(url.url, content=b"from the field").status_code == 200
    assert objects.get("uploads/new tile.png") == b"from the field"
    # bytes that came through a presigned URL carry no SHA-256 of offmaps'
    assert objects.head("uploads/new tile.png").sha256 is None


def test_a_presigned_put_bound_to_a_sha256_takes_only_those_bytes(objects: S3ObjectStore) -> None:
    url = objects.presign_put(
        "uploads/tile.png", MINUTE, sha256=hashlib.sha256(b"tile").hexdigest()
    )
    assert query(url.url)["X-Amz-SignedHeaders"] == "host;x-amz-checksum-sha256"
    wrong = httpx.put(url.url, content=b"evil", headers=dict(url.headers))
    assert wrong.status_code == 400
    assert "BadDigest" in wrong.text
    refused(httpx.put(url.url, content=b"tile"))  # without the signed header
    assert not objects.exists("uploads/tile.png")
    assert httpx.put(url.url, content=b"tile", headers=dict(url.headers)).status_code == 200
    assert objects.get("uploads/tile.png") == b"tile"
    assert objects.presign_put("k", MINUTE).headers == {}
    with pytest.raises(InvalidBlobKeyError):
        objects.presign_put("k", MINUTE, sha256="not a digest")


def unchanged(store: S3ObjectStore) -> None:
    assert [info.key for info in store.list()] == ["tiles/3/4/2.png"]
    assert store.get("tiles/3/4/2.png") == DATA


def refused(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert DATA not in answer.content


def test_a_tampered_signature_is_refused(objects: S3ObjectStore) -> None:
    for url in (objects.presign_get("tiles/3/4/2.png", MINUTE).url,):
        signature = query(url)["X-Amz-Signature"]
        flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        refused(httpx.get(with_query(url, **{"X-Amz-Signature": flipped})))
        refused(httpx.get(with_query(url, **{"X-Amz-Expires": "604800"})))  # a longer life
    put = objects.presign_put("tiles/3/4/2.png", MINUTE).url
    signature = query(put)["X-Amz-Signature"]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    refused(httpx.put(with_query(put, **{"X-Amz-Signature": flipped}), content=b"evil"))
    unchanged(objects)


def test_a_url_is_bound_to_its_key(objects: S3ObjectStore) -> None:
    objects.put("tiles/3/4/3.png", b"the neighbour")
    get = objects.presign_get("tiles/3/4/3.png", MINUTE).url
    refused(httpx.get(get.replace("/3/4/3.png", "/3/4/2.png")))
    put = objects.presign_put("tiles/3/4/3.png", MINUTE).url
    refused(httpx.put(put.replace("/3/4/3.png", "/3/4/2.png"), content=b"evil"))
    refused(httpx.put(put.replace("/3/4/3.png", "/3/4/9.png"), content=b"evil"))
    objects.delete("tiles/3/4/3.png")
    unchanged(objects)


def test_a_url_is_bound_to_its_method(objects: S3ObjectStore) -> None:
    get = objects.presign_get("tiles/3/4/2.png", MINUTE).url
    refused(httpx.put(get, content=b"evil"))
    refused(httpx.delete(get))
    put = objects.presign_put("tiles/3/4/2.png", MINUTE).url
    refused(httpx.get(put))
    refused(httpx.delete(put))
    unchanged(objects)


def test_an_expired_url_is_refused(objects: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # signed for real an hour ago (botocore's clock moved back), valid for a minute
    an_hour_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    get = objects.presign_get("tiles/3/4/2.png", MINUTE)
    put = objects.presign_put("tiles/3/4/2.png", MINUTE)
    monkeypatch.undo()
    assert get.expires_at < datetime.now(UTC)
    refused(httpx.get(get.url))
    refused(httpx.put(put.url, content=b"evil"))
    # the same URLs signed now work: the refusal is the expiry
    assert httpx.get(objects.presign_get("tiles/3/4/2.png", MINUTE).url).status_code == 200
    unchanged(objects)


def test_a_foreign_url_is_refused(objects: S3ObjectStore, s3_endpoint: str) -> None:
    # another identity of the same service, which may use its own bucket only
    stranger = S3ObjectStore(
        S3Config(
            BUCKET,
            objects.config.prefix,
            endpoint_url=s3_endpoint,
            access_key_id=FOREIGN[0],
            secret_access_key=FOREIGN[1],
        )
    )
    refused(httpx.get(stranger.presign_get("tiles/3/4/2.png", MINUTE).url))
    refused(httpx.put(stranger.presign_put("tiles/3/4/2.png", MINUTE).url, content=b"evil"))
    # the admin's key id with a secret that is not the admin's
    forger = S3ObjectStore(
        S3Config(
            BUCKET,
            objects.config.prefix,
            endpoint_url=s3_endpoint,
            access_key_id=objects.config.access_key_id,
            secret_access_key="not the admin's secret",
        )
    )
    refused(httpx.get(forger.presign_get("tiles/3/4/2.png", MINUTE).url))
    refused(httpx.put(forger.presign_put("tiles/3/4/2.png", MINUTE).url, content=b"evil"))
    unchanged(objects)


def test_a_foreign_identity_works_in_its_own_bucket(s3_client: S3Client, s3_endpoint: str) -> None:
    """The foreign identity is refused above for want of rights, not for being broken."""
    own = S3ObjectStore(
        S3Config(
            FOREIGN_BUCKET,
            "t/",
            endpoint_url=s3_endpoint,
            access_key_id=FOREIGN[0],
            secret_access_key=FOREIGN[1],
        )
    )
    url = own.presign_put("mine", MINUTE).url
    assert httpx.put(url, content=DATA).status_code == 200
    assert httpx.get(own.presign_get("mine", MINUTE).url).content == DATA
    own.delete("mine")


def test_presigned_urls_use_the_public_endpoint(s3_config: S3Config) -> None:
    public = S3ObjectStore(replace(s3_config, public_endpoint_url="https://s3.example.org"))
    url = public.presign_get("a/b.png", MINUTE).url
    assert url.startswith(f"https://s3.example.org/{BUCKET}/{s3_config.prefix}a/b.png?")


# --- what is stored beside the bytes --------------------------------------------------------------


def test_head_tells_the_sha256_put_stored(s3_config: S3Config) -> None:
    store = S3ObjectStore(s3_config)
    store.put("a", DATA)
    store.put_stream("b", io.BytesIO(DATA))
    assert store.head("a").sha256 == store.head("b").sha256 == SHA
    assert [info.sha256 for info in store.list()] == [None, None]  # listings carry no metadata


def test_large_objects_go_up_in_parts_with_their_sha256(s3_config: S3Config) -> None:
    store = S3ObjectStore(s3_config, multipart_threshold=5 * 1024 * 1024)
    data = os.urandom(9 * 1024 * 1024 + 5)
    info = store.put_stream("big.bin", io.BytesIO(data))
    assert info.size == len(data)
    assert "-" in info.etag  # S3's ETag of a multipart upload: parts counted after a dash
    assert store.head("big.bin").sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("big.bin") == data


def test_the_service_refuses_bytes_that_do_not_match_their_sha256(s3_config: S3Config) -> None:
    store = S3ObjectStore(s3_config)
    wrong = hashlib.sha256(b"other bytes").digest()
    with pytest.raises(BlobIntegrityError, match="damaged"):
        store._bucket.upload("k", io.BytesIO(DATA), len(DATA), wrong, threshold=1 << 20)
    assert not store.exists("k")


def test_blobs_are_laid_out_as_in_a_folder(s3_config: S3Config, s3_client: S3Client) -> None:
    S3BlobStore(s3_config).put(DATA)
    assert bucket_keys(s3_client, BUCKET, s3_config.prefix) == [
        f"{s3_config.prefix}{SHA[:2]}/{SHA[2:4]}/{SHA}"
    ]


def test_putting_a_stored_blob_again_writes_nothing(
    s3_config: S3Config, s3_client: S3Client
) -> None:
    store = S3BlobStore(s3_config)
    store.put(DATA)
    key = f"{s3_config.prefix}{SHA[:2]}/{SHA[2:4]}/{SHA}"
    # mark the stored object: a new write would drop the mark
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=DATA, Metadata={"mark": "first"})
    store.put(DATA)
    store.put_stream(io.BytesIO(DATA))
    assert s3_client.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"mark": "first"}


def test_verify_reads_the_bytes_back(s3_config: S3Config, s3_client: S3Client) -> None:
    store = S3BlobStore(s3_config)
    store.put(DATA)
    key = f"{s3_config.prefix}{SHA[:2]}/{SHA[2:4]}/{SHA}"
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=DATA.upper())  # damaged, same size
    with pytest.raises(BlobIntegrityError, match=SHA):
        store.verify(SHA)
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=DATA[:-1])  # damaged, shorter
    store.put(DATA)  # a stored blob of another size is replaced
    store.verify(SHA)


def test_iter_keys_skips_foreign_keys(s3_config: S3Config, s3_client: S3Client) -> None:
    store = S3BlobStore(s3_config)
    store.put(DATA)
    for key in ("notes.txt", f"{SHA[:2]}/{SHA[2:4]}/x", f"ff/ff/{SHA}", SHA):
        s3_client.put_object(Bucket=BUCKET, Key=s3_config.prefix + key, Body=b"x")
    assert list(store.iter_keys()) == [SHA]


def test_list_skips_keys_that_are_no_store_keys(s3_config: S3Config, s3_client: S3Client) -> None:
    store = S3ObjectStore(s3_config)
    store.put("a/b", DATA)
    # (SeaweedFS itself turns a backslash into a slash and collapses "//")
    for key in (".hidden", "a/.tmp", "a/x\x7fy", "a/.x/y"):
        s3_client.put_object(Bucket=BUCKET, Key=s3_config.prefix + key, Body=b"x")
    assert [info.key for info in store.list()] == ["a/b"]


# --- a service that is down, missing or refusing -----------------------------------------------


def calls(objects: S3ObjectStore, blobs: S3BlobStore) -> list[object]:
    return [
        lambda: objects.put("a/b", DATA),
        lambda: objects.get("a/b"),
        lambda: objects.get_range("a/b", 0, 3),
        lambda: objects.open("a/b"),
        lambda: objects.head("a/b"),
        lambda: objects.exists("a/b"),
        lambda: list(objects.list()),
        lambda: objects.delete("a/b"),
        objects.check,
        lambda: blobs.put(DATA),
        lambda: blobs.get(SHA),
        lambda: list(blobs.iter_keys()),
        blobs.check,
    ]


def assert_all_fail(
    config: S3Config, match: str, expected: type[StorageError] = StorageError
) -> None:
    for call in calls(S3ObjectStore(config), S3BlobStore(config)):
        with pytest.raises(StorageError, match=match) as raised:
            call()  # type: ignore[operator]
        assert type(raised.value) is expected, raised.value
        assert "botocore" not in str(raised.value)


def test_a_service_that_is_down_is_a_clear_storage_error() -> None:
    # a port nothing listens on
    config = S3Config(
        BUCKET,
        endpoint_url="http://127.0.0.1:9",
        access_key_id="k",
        secret_access_key="s",
        max_attempts=1,
        connect_timeout=2,
    )
    assert_all_fail(
        config,
        r"cannot reach the S3 store at http://127\.0\.0\.1:9 .*is it running",
        StorageUnavailableError,  # a 503 at the HTTP edge: try again
    )


def test_refused_credentials_are_a_clear_storage_error(s3_config: S3Config) -> None:
    config = replace(s3_config, secret_access_key="wrong")
    assert_all_fail(config, "refused .*check the keys")
    config = replace(s3_config, access_key_id="nobody")
    assert_all_fail(config, "refused .*check the keys")


def test_a_foreign_identity_is_refused_by_the_store_api(s3_config: S3Config) -> None:
    config = replace(s3_config, access_key_id=FOREIGN[0], secret_access_key=FOREIGN[1])
    assert_all_fail(config, "refused")


def test_a_missing_bucket_is_a_clear_storage_error(
    s3_config: S3Config, s3_client: S3Client
) -> None:
    config = replace(s3_config, bucket="offmaps-no-such-bucket")
    for call in (
        lambda: S3ObjectStore(config).put("a", DATA),
        lambda: list(S3ObjectStore(config).list()),
        S3ObjectStore(config).check,
        S3BlobStore(config).check,
        lambda: S3BlobStore(config).put(DATA),
    ):
        with pytest.raises(StorageError, match="'offmaps-no-such-bucket' does not exist"):
            call()
    # SeaweedFS makes a missing bucket on a put: the stores asked first
    assert "offmaps-no-such-bucket" not in [
        bucket["Name"] for bucket in s3_client.list_buckets()["Buckets"]
    ]


# --- configuration -------------------------------------------------------------------------------


def test_a_url_and_offmaps_variables_configure_a_store() -> None:
    environ = {
        "OFFMAPS_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "OFFMAPS_S3_PUBLIC_ENDPOINT_URL": "https://s3.example.org",
        "OFFMAPS_S3_ACCESS_KEY_ID": "offmaps-key",
        "OFFMAPS_S3_SECRET_ACCESS_KEY": "offmaps-secret",
        "OFFMAPS_S3_REGION": "eu-north-1",
        "AWS_ACCESS_KEY_ID": "aws-key",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_ENDPOINT_URL": "http://elsewhere",
    }
    config = S3Config.from_url("s3://tiles-bucket/caches/osm/", environ)
    assert config == S3Config(
        bucket="tiles-bucket",
        prefix="caches/osm/",
        endpoint_url="http://127.0.0.1:8333",
        public_endpoint_url="https://s3.example.org",
        region="eu-north-1",
        access_key_id="offmaps-key",
        secret_access_key="offmaps-secret",
    )
    assert config.url == "s3://tiles-bucket/caches/osm/"
    assert "offmaps-secret" not in repr(config)
    assert "offmaps-secret" not in repr(S3ObjectStore(config))
    assert config.below("jobs/42").prefix == "caches/osm/jobs/42/"


def test_aws_variables_are_the_fallback() -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": "aws-key",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_SESSION_TOKEN": "token",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    config = S3Config.from_url("s3://bucket", environ)
    assert (config.bucket, config.prefix, config.endpoint_url, config.region) == (
        "bucket",
        "",
        "http://minio:9000",
        "eu-west-1",
    )
    assert (config.access_key_id, config.secret_access_key, config.session_token) == (
        "aws-key",
        "aws-secret",
        "token",
    )
    bare = S3Config.from_url("s3://bucket/p", {})
    assert (bare.endpoint_url, bare.region, bare.access_key_id) == (None, "us-east-1", None)


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket/prefix",
        "s3://",
        "s3:///prefix",
        "s3://Bucket",
        "s3://b",
        "s3://user:secret@bucket",
        "s3://bucket:9000/x",
        "s3://bucket/a?x=1",
        "s3://bucket/a#f",
        "bucket/prefix",
        "",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="S3"):
        S3Config.from_url(url, {})


@pytest.mark.parametrize("url", ["s3://bucket/../x", "s3://bucket/a//b", "s3://bucket/.hidden"])
def test_malformed_prefixes_are_refused(url: str) -> None:
    with pytest.raises(InvalidObjectKeyError):
        S3Config.from_url(url, {})


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="OFFMAPS_S3_SECRET_ACCESS_KEY"):
        S3Config.from_url("s3://bucket", {"OFFMAPS_S3_ACCESS_KEY_ID": "k"})
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        S3Config.from_url("s3://bucket", {"AWS_SECRET_ACCESS_KEY": "s"})


def test_the_stores_module_is_loaded_on_first_use() -> None:
    import offmaps.storage  # noqa: PLC0415

    assert offmaps.storage.S3ObjectStore is S3ObjectStore
    with pytest.raises(AttributeError):
        offmaps.storage.NoSuchStore  # type: ignore[attr-defined]  # noqa: B018
