"""Stores in a bucket of an S3-compatible service (AWS S3, SeaweedFS, MinIO, ...), through boto3.

:class:`S3ObjectStore` keeps the :class:`~offmaps.storage.objects.ObjectStore` contract and
:class:`S3BlobStore` the :class:`~offmaps.storage.base.BlobStore` one, each below a key prefix of
one bucket (``s3://BUCKET/PREFIX``, see :class:`S3Config`). What S3 itself does not guarantee,
the stores do on the client side:

* ``a`` and ``a/b`` cannot both be objects: a put first asks whether an object lies at a folder
  of the key (one ``HEAD`` per level) or below the key (one ``LIST``). Two puts racing for ``a``
  and ``a/b`` on two clients may both pass; within the contract's single writer they cannot.
* Listing is in ascending key order on every service: the stores walk one folder level at a
  time (``Delimiter=/``) and sort each level, since some services (SeaweedFS) list a flat prefix
  folder by folder, ``a/b`` before ``a-c``.
* Every put sends the bytes' SHA-256 twice: as S3's ``x-amz-checksum-sha256``, which the service
  checks before it stores anything (a damaged upload is refused), and as the metadata
  ``x-amz-meta-sha256``, which ``head`` reads back into :attr:`ObjectInfo.sha256`. A streamed put
  is spooled to a temporary file (in memory up to 8 MiB) while it is hashed and its size limit
  checked, so nothing reaches the bucket unless the whole stream came; objects over
  ``multipart_threshold`` go up in parts (then only the metadata carries the hash).
* Presigned URLs are S3's own, signed with SigV4 by boto3 (``signature_version="s3v4"``) for
  one key and one method; the service checks them, so a tampered, expired or foreign URL is
  refused by the service (403), not by offmaps.

Errors of boto3 never leave a store: a missing object is ``ObjectNotFoundError`` (or
``BlobNotFoundError``), a service that cannot be reached, a missing bucket, refused credentials
and every other failure are :class:`~offmaps.errors.StorageError` naming the endpoint, bucket and
key. boto3 is an optional dependency (the ``s3`` extra); ``offmaps.storage`` imports this module
only when one of its names is used.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPMethod
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

import botocore.session
from boto3.exceptions import Boto3Error
from boto3.s3.inject import upload_fileobj
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    InvalidObjectKeyError,
    ObjectKeyConflictError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageUnavailableError,
)
from offmaps.storage._stream import CHUNK_SIZE, Chunks, check_max_size, iter_chunks
from offmaps.storage._stream import open_source_file as _open_source_file
from offmaps.storage.base import BlobRef, check_blob_key
from offmaps.storage.keys import check_key_prefix, check_object_key
from offmaps.storage.objects import ObjectInfo
from offmaps.storage.presign import MAX_PRESIGN_EXPIRY, PresignedURL
from offmaps.storage.ranges import check_range

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3BlobStore", "S3Config", "S3ObjectStore"]

SPOOL_BYTES = 8 * 1024 * 1024
"""Bytes of a streamed put held in memory before its spool file goes to disk."""

MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Objects larger than this are uploaded in parts (S3's single PUT stops at 5 GiB)."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BLOB_KEY = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidToken",
    "403",
    "Forbidden",
}
_DAMAGED = {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"}
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where a store's bytes live in S3, and how to reach them.

    Attributes:
        bucket: the bucket (it must exist; the stores never create one).
        prefix: the key prefix the store keeps its keys below (``tiles/``), ``""`` for the
            whole bucket; it ends with ``/`` unless empty.
        endpoint_url: the service's URL (``http://127.0.0.1:8333`` for a SeaweedFS); ``None``
            for AWS S3 itself.
        public_endpoint_url: the URL clients reach the service at, when it differs from
            ``endpoint_url`` (a service on an internal network behind a public name): presigned
            URLs are signed for it. ``None``: the same as ``endpoint_url``.
        region: the signing region (``us-east-1`` suits most S3-compatible services).
        access_key_id: the access key; ``None`` with ``secret_access_key`` ``None`` leaves
            credentials to boto3's own chain (``~/.aws``, instance roles).
        secret_access_key: the secret key (never shown by ``repr``).
        session_token: a temporary credential's token, if any.
        max_attempts: attempts per request, the first included (boto3's standard retry mode
            retries throttling, 5xx answers and dropped connections with backoff).
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait for bytes of an answer.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    max_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not _BUCKET.fullmatch(self.bucket):
            raise ValueError(
                f"an S3 bucket name is 3 to 63 lowercase letters, digits, '.' and '-', "
                f"starting and ending with a letter or digit: not {self.bucket!r}"
            )
        if self.prefix:
            if not self.prefix.endswith("/"):
                raise ValueError(f"an S3 key prefix ends with '/': not {self.prefix!r}")
            check_object_key(self.prefix[:-1])
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("an S3 access key id and its secret key come together")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts is at least 1, not {self.max_attempts}")

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> S3Config:
        """The configuration of a store at ``s3://BUCKET/PREFIX`` (the prefix is optional).

        The rest comes from the environment (``environ``, by default the process's):
        ``OFFMAPS_S3_ENDPOINT_URL`` (else ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``),
        ``OFFMAPS_S3_PUBLIC_ENDPOINT_URL``, ``OFFMAPS_S3_REGION`` (else ``AWS_REGION``,
        ``AWS_DEFAULT_REGION``, else ``us-east-1``), and the keys ``OFFMAPS_S3_ACCESS_KEY_ID``
        with ``OFFMAPS_S3_SECRET_ACCESS_KEY`` (else ``AWS_ACCESS_KEY_ID`` with
        ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``; else boto3's own chain).

        Raises:
            ValueError: the URL is not ``s3://BUCKET[/PREFIX]`` with a valid bucket name and a
                valid key prefix, or only one of a pair of keys is set.
        """
        env = os.environ if environ is None else environ
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme != "s3"
            or not parts.netloc
            or parts.query
            or parts.fragment
            or "@" in parts.netloc
            or ":" in parts.netloc
        ):
            raise ValueError(f"an S3 storage URL is s3://BUCKET or s3://BUCKET/PREFIX: not {url!r}")
        path = parts.path.removeprefix("/").removesuffix("/")
        prefix = f"{check_object_key(path)}/" if path else ""

        def get(*names: str) -> str | None:
            for name in names:
                if value := env.get(name, "").strip():
                    return value
            return None

        if get("OFFMAPS_S3_ACCESS_KEY_ID", "OFFMAPS_S3_SECRET_ACCESS_KEY"):
            key_id = get("OFFMAPS_S3_ACCESS_KEY_ID")
            secret = get("OFFMAPS_S3_SECRET_ACCESS_KEY")
            token = None
            names = "OFFMAPS_S3_ACCESS_KEY_ID and OFFMAPS_S3_SECRET_ACCESS_KEY"
        else:
            key_id = get("AWS_ACCESS_KEY_ID")
            secret = get("AWS_SECRET_ACCESS_KEY")
            token = get("AWS_SESSION_TOKEN")
            names = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        if (key_id is None) != (secret is None):
            raise ValueError(f"set both {names}, or neither")
        return cls(
            bucket=parts.netloc,
            prefix=prefix,
            endpoint_url=get("OFFMAPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            public_endpoint_url=get("OFFMAPS_S3_PUBLIC_ENDPOINT_URL"),
            region=get("OFFMAPS_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
        )

    @property
    def url(self) -> str:
        """The store's ``s3://BUCKET/PREFIX`` URL."""
        return f"s3://{self.bucket}/{self.prefix}"

    def below(self, prefix: str) -> S3Config:
        """The same configuration for the keys below ``prefix`` (a valid object key)."""
        return replace(self, prefix=f"{self.prefix}{check_object_key(prefix.rstrip('/'))}/")


# --- the bucket, with boto3's errors mapped -----------------------------------------------------


@functools.cache
def _botocore_session() -> botocore.session.Session:
    # one per process: it loads S3's service model once, for every client made from it
    return botocore.session.get_session()


_CLIENTS_LOCK = threading.Lock()  # making clients from one session is not thread-safe


def _client(config: S3Config, endpoint_url: str | None) -> S3Client:
    # stores of one service and keys share a client (its connection pool), whatever prefix
    return _shared_client(replace(config, prefix=""), endpoint_url)


@functools.lru_cache(maxsize=64)
def _shared_client(config: S3Config, endpoint_url: str | None) -> S3Client:
    botocore_config = Config(
        signature_version="s3v4",  # presigned URLs too (boto3 would sign them with SigV2)
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=32,
        # checksums only where offmaps sends them (SHA-256), not CRC32 trailers on every put
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _CLIENTS_LOCK:
        client = _botocore_session().create_client(
            "s3",
            region_name=config.region,
            endpoint_url=endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
            config=botocore_config,
        )
    return cast("S3Client", client)


class _Bucket:
    """One bucket and key prefix of an S3 service: the client, and errors in offmaps' terms."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.client = _client(config, config.endpoint_url)
        public = config.public_endpoint_url
        self.presigner = self.client if public is None else _client(config, public)
        self.where = f"{config.endpoint_url or 'AWS S3'} (bucket {config.bucket!r})"
        self._checked = False  # whether the bucket was seen to exist

    def key(self, key: str) -> str:
        """The bucket's key for a store key."""
        return self.config.prefix + key

    @contextlib.contextmanager
    def errors(
        self, doing: str, key: str, *, missing: Callable[[], StorageError] | None = None
    ) -> Iterator[None]:
        """Turn boto3's errors inside the block into offmaps' (``missing()`` for a missing key)."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, doing, key, missing) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageError(
                f"no credentials for the S3 store at {self.where}: set "
                "OFFMAPS_S3_ACCESS_KEY_ID and OFFMAPS_S3_SECRET_ACCESS_KEY (or AWS_*)"
            ) from exc
        except _UNREACHABLE as exc:
            raise StorageUnavailableError(
                f"cannot reach the S3 store at {self.where} to {doing} {key!r}: "
                "no connection (is it running?)"
            ) from exc
        except ReadTimeoutError as exc:
            raise StorageUnavailableError(
                f"the S3 store at {self.where} did not answer in time to {doing} {key!r}"
            ) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(
                f"the S3 store at {self.where} failed to {doing} {key!r}: {exc}"
            ) from exc

    def _client_error(
        self,
        exc: ClientError,
        doing: str,
        key: str,
        missing: Callable[[], StorageError] | None,
    ) -> StorageError:
        error: Mapping[str, Any] = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND and missing is not None:
            return missing()
        if code == "NoSuchBucket":
            return StorageError(self._no_bucket())
        if code in _REFUSED or status == 403:
            return StorageError(
                f"the S3 store at {self.where} refused to {doing} {key!r} ({code}: {message}); "
                "check the keys (OFFMAPS_S3_ACCESS_KEY_ID, OFFMAPS_S3_SECRET_ACCESS_KEY) and "
                "what they may do"
            )
        if code in _DAMAGED:
            return BlobIntegrityError(
                f"the S3 store at {self.where} refused the bytes of {key!r}: they were damaged "
                f"on the way ({code})"
            )
        return StorageError(
            f"the S3 store at {self.where} failed to {doing} {key!r}: {code}: {message}"
        )

    def _no_bucket(self) -> str:
        where = self.config.endpoint_url or "AWS S3"
        return f"the S3 bucket {self.config.bucket!r} does not exist at {where}"

    def head(self, key: str) -> Mapping[str, Any] | None:
        """The service's ``HEAD`` of a store key, or ``None`` when there is no such object."""
        try:
            with self.errors("read", key, missing=_AbsentError):
                return self.client.head_object(Bucket=self.config.bucket, Key=self.key(key))
        except _AbsentError:
            return None

    def check(self, *, strict: bool = True) -> None:
        """Raise a clear ``StorageError`` unless the bucket exists and the keys may reach it.

        Not ``strict``: only a missing bucket (and an unreachable service) raise; keys that may
        write objects but not ask about the bucket (``HeadBucket`` needs ``s3:ListBucket``)
        pass, and the put itself decides.
        """
        with self.errors("reach the bucket", self.config.prefix):
            try:
                self.client.head_bucket(Bucket=self.config.bucket)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND or _code(exc) == "NoSuchBucket":
                    raise StorageError(self._no_bucket()) from exc
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if not strict and status == 403:
                    return
                raise

    def upload(
        self, key: str, source: IO[bytes], size: int, sha256: bytes, *, threshold: int
    ) -> str:
        """Store ``size`` bytes read from ``source`` (at its start) under a store key, with
        their SHA-256; returns the new ETag (unquoted)."""
        if not self._checked:
            # some services (SeaweedFS) make a missing bucket on the first put: a mistyped
            # bucket name must be an error, not a new bucket
            self.check(strict=False)
            self._checked = True
        metadata = {"sha256": sha256.hex()}
        with self.errors("store", key):
            if size <= threshold:
                response = self.client.put_object(
                    Bucket=self.config.bucket,
                    Key=self.key(key),
                    Body=source,
                    ContentLength=size,
                    ChecksumSHA256=base64.b64encode(sha256).decode("ascii"),
                    Metadata=metadata,
                )
                return response["ETag"].strip('"')
            transfer = TransferConfig(
                multipart_threshold=threshold, multipart_chunksize=max(threshold, 8 << 20)
            )
            upload_fileobj(  # boto3's managed upload, in parts
                self.client,
                source,
                self.config.bucket,
                self.key(key),
                ExtraArgs={"Metadata": metadata},
                Config=transfer,
            )
        head = self.head(key)
        return "" if head is None else str(head["ETag"]).strip('"')

    def open(self, key: str, missing: Callable[[], StorageError]) -> BinaryIO:
        """A binary file streaming the object under a store key."""
        with self.errors("read", key, missing=missing):
            response = self.client.get_object(Bucket=self.config.bucket, Key=self.key(key))
        return io.BufferedReader(_Body(response["Body"], self, key), CHUNK_SIZE)


def _code(exc: BaseException | None) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


class _AbsentError(StorageError):
    """No object there (caught inside this module)."""


class _Body(io.RawIOBase):
    """A botocore streaming body as a raw binary file, its errors mapped."""

    def __init__(self, body: Any, bucket: _Bucket, key: str) -> None:
        super().__init__()
        self._body = body
        self._bucket = bucket
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._bucket.errors("read", self._key):
            data: bytes = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _is_ours(key: str, *, folder: bool) -> bool:
    """Whether a key listed in the bucket is a valid store key (or a folder of some)."""
    try:
        if folder:
            check_key_prefix(key)
        else:
            check_object_key(key)
    except InvalidObjectKeyError:
        return False
    return True


def _info(key: str, head: Mapping[str, Any]) -> ObjectInfo:
    sha256 = str(head.get("Metadata", {}).get("sha256", ""))
    return ObjectInfo(
        key,
        int(head["ContentLength"]),
        str(head["ETag"]).strip('"'),
        head["LastModified"].astimezone(UTC),
        sha256 if _SHA256_HEX.fullmatch(sha256) else None,
    )


def _expiry_seconds(expires: object) -> int:
    if not isinstance(expires, timedelta) or not (
        timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY
    ):
        raise ValueError(
            f"a presigned URL expires between 1 second and {MAX_PRESIGN_EXPIRY}, not {expires!r}"
        )
    return math.ceil(expires.total_seconds())


def _signed_at(url: str) -> datetime:
    """When boto3 signed a presigned URL (its ``X-Amz-Date``)."""
    stamp = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


class _Spool:
    """The bytes of a put, hashed and counted as they are written to a temporary file."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0

    def fill(self, chunks: Iterable[bytes]) -> _Spool:
        try:
            for chunk in chunks:
                self.digest.update(chunk)
                self.size += len(chunk)
                self.file.write(chunk)
            self.file.seek(0)
        except BaseException:
            self.file.close()
            raise
        return self

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def _hash_file(source: IO[bytes]) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return digest.digest(), size


# --- the object store ---------------------------------------------------------------------------


class S3ObjectStore:
    """An :class:`~offmaps.storage.objects.ObjectStore` below one prefix of an S3 bucket.

    Keys are the store's own; in the bucket they sit below ``config.prefix``. ``ObjectInfo``'s
    ``etag`` is S3's ETag (the MD5 of the bytes for a single PUT), so putting the same bytes
    again keeps it, as an HTTP ETag should; ``modified`` has S3's whole seconds. The client is
    safe to share between threads.

    Args:
        config: the bucket, prefix, endpoint and keys (:meth:`S3Config.from_url`).
        multipart_threshold: objects larger than this go up in parts.
    """

    def __init__(self, config: S3Config, *, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.config = config
        self.multipart_threshold = multipart_threshold
        self._bucket = _Bucket(config)

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> S3ObjectStore:
        """The store at ``s3://BUCKET/PREFIX``, configured from the environment
        (:meth:`S3Config.from_url`)."""
        return cls(S3Config.from_url(url, environ))

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.config.url!r})"

    def check(self) -> None:
        """Ask the service whether the bucket exists and the keys reach it.

        Raises:
            StorageError: it cannot be reached, the bucket is missing, or access is refused.
        """
        self._bucket.check()

    def _missing(self, key: str) -> Callable[[], StorageError]:
        return lambda: ObjectNotFoundError(f"no object {key!r}", key=key)

    # --- writing ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        return self.put_stream(key, (data,))

    def put_stream(self, key: str, stream: Chunks, *, max_size: int | None = None) -> ObjectInfo:
        """Store the bytes of a binary file or an iterable of chunks under ``key``.

        The bytes are spooled and hashed first: nothing is sent unless the whole stream came.

        Raises:
            ObjectTooLargeError: more than ``max_size`` bytes came; nothing was stored.
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it.
            StorageError: the service failed or refused.
        """
        key = check_object_key(key)
        check_max_size(max_size)

        def too_large(limit: int) -> ObjectTooLargeError:
            return ObjectTooLargeError(
                f"object {key!r} is larger than the {limit:,} bytes allowed",
                key=key,
                max_size=limit,
            )

        self._check_place(key)
        with _Spool().fill(iter_chunks(stream, max_size, too_large=too_large)) as spool:
            return self._upload(key, spool.file, spool.size, spool.digest.digest())

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Upload the local file ``path`` as the object under ``key``, then remove the file.

        When the object cannot be stored, nothing is, and the file stays at ``path``.

        Raises:
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it.
            StorageError: ``path`` is missing, unreadable, a symbolic link or not a regular
                file; or the service failed.
        """
        key = check_object_key(key)
        with _open_source_file(path, key) as source:
            self._check_place(key)
            sha256, size = _hash_file(source)
            info = self._upload(key, source, size, sha256)
        try:
            os.unlink(path)
        except OSError as exc:
            # stored but not moved: take it out again, so that the caller may retry
            with contextlib.suppress(StorageError):
                self.delete(key)
            raise StorageError(
                f"cannot move {str(path)!r} in as {key!r}: {exc.strerror or exc}"
            ) from exc
        return info

    def _upload(self, key: str, source: IO[bytes], size: int, sha256: bytes) -> ObjectInfo:
        etag = self._bucket.upload(key, source, size, sha256, threshold=self.multipart_threshold)
        head = self._bucket.head(key)
        if head is not None and str(head["ETag"]).strip('"') == etag:
            modified = head["LastModified"].astimezone(UTC)
        else:  # replaced (or deleted) by another client meanwhile
            modified = datetime.now(UTC).replace(microsecond=0)
        return ObjectInfo(key, size, etag, modified, sha256.hex())

    def _check_place(self, key: str) -> None:
        """Refuse a key below an object, or above objects (S3 would take both)."""
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if self._bucket.head(folder) is not None:
                raise ObjectKeyConflictError(
                    f"cannot store below {folder!r}: it is an object", key=folder
                )
        with self._bucket.errors("list", key):
            below = self._bucket.client.list_objects_v2(
                Bucket=self.config.bucket, Prefix=self._bucket.key(key) + "/", MaxKeys=1
            )
        if below.get("KeyCount", 0) or below.get("Contents"):
            raise ObjectKeyConflictError(
                f"cannot store {key!r}: other objects are stored below it", key=key
            )

    # --- reading ---------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        key = check_object_key(key)
        with self._bucket.errors("read", key, missing=self._missing(key)):
            response = self._bucket.client.get_object(
                Bucket=self.config.bucket, Key=self._bucket.key(key)
            )
            return response["Body"].read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset`` (see ``ObjectStore``)."""
        offset, length = check_range(offset, length)
        key = check_object_key(key)
        if length == 0:
            self.head(key)
            return b""
        with self._bucket.errors("read", key, missing=self._missing(key)):
            try:
                response = self._bucket.client.get_object(
                    Bucket=self.config.bucket,
                    Key=self._bucket.key(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except ClientError as exc:
                if _code(exc) == "InvalidRange":  # from past the end (or an empty object)
                    return b""
                raise
            return response["Body"].read()

    def open(self, key: str) -> BinaryIO:
        """A binary file streaming the object; the caller closes it."""
        key = check_object_key(key)
        return self._bucket.open(key, self._missing(key))

    def head(self, key: str) -> ObjectInfo:
        """What the service knows about the object; its SHA-256 when offmaps stored it."""
        key = check_object_key(key)
        head = self._bucket.head(key)
        if head is None:
            raise self._missing(key)()
        return _info(key, head)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return self._bucket.head(check_object_key(key)) is not None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, in ascending key order.

        One folder level is listed at a time (``Delimiter=/``) and sorted, so the order is
        right on every service; keys of the bucket that are no valid keys are skipped. Objects
        from a listing carry no SHA-256 (S3 lists no metadata).
        """
        prefix = check_key_prefix(prefix)  # checked now, not at the first next()
        folder, _, start = prefix.rpartition("/")
        return self._walk(f"{folder}/" if folder else "", start)

    def _walk(self, base: str, start: str) -> Iterator[ObjectInfo]:
        files: dict[str, Mapping[str, Any]] = {}
        folders: set[str] = set()
        skip = len(self.config.prefix) + len(base)
        paginator = self._bucket.client.get_paginator("list_objects_v2")
        with self._bucket.errors("list", base + start):
            pages = paginator.paginate(
                Bucket=self.config.bucket, Prefix=self._bucket.key(base + start), Delimiter="/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    files[item["Key"][skip:]] = item
                for common in page.get("CommonPrefixes", []):
                    folders.add(common["Prefix"][skip:])
        for name in sorted(files.keys() | folders):
            key = base + name
            if not _is_ours(key, folder=name in folders):
                continue
            if name in folders:
                yield from self._walk(key, "")
                continue
            listed = files[name]
            yield ObjectInfo(
                key,
                int(listed["Size"]),
                str(listed["ETag"]).strip('"'),
                listed["LastModified"].astimezone(UTC),
            )

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens when there is none."""
        key = check_object_key(key)
        with self._bucket.errors("delete", key):
            self._bucket.client.delete_object(Bucket=self.config.bucket, Key=self._bucket.key(key))

    # --- presigning ------------------------------------------------------------------------

    def presign_get(self, key: str, expires: timedelta) -> PresignedURL:
        """An S3 URL (SigV4) that lets its holder GET the object until ``expires`` from now."""
        return _presign(self._bucket, check_object_key(key), HTTPMethod.GET, expires)

    def presign_put(
        self, key: str, expires: timedelta, *, sha256: str | None = None
    ) -> PresignedURL:
        """An S3 URL (SigV4) that lets its holder PUT the object until ``expires`` from now.

        With ``sha256`` (the hex digest the uploader declares), the URL also signs the header
        ``x-amz-checksum-sha256`` (in :attr:`PresignedURL.headers`), which the upload must
        carry: the service then refuses bytes that hash otherwise (400 ``BadDigest``), and a
        request without the header (403). The bytes put through a URL arrive without offmaps'
        SHA-256 metadata (``head`` shows no ``sha256``): whoever accepts them checks them.

        Raises:
            InvalidObjectKeyError: for a malformed key.
            InvalidBlobKeyError: ``sha256`` is not 64 lowercase hex characters.
            ValueError: an expiry not between one second and :data:`MAX_PRESIGN_EXPIRY`.
        """
        return _presign(self._bucket, check_object_key(key), HTTPMethod.PUT, expires, sha256)


def _presign(
    bucket: _Bucket, key: str, method: HTTPMethod, expires: timedelta, sha256: str | None = None
) -> PresignedURL:
    """A SigV4 URL for ``method`` on the store's ``key`` (checked by the caller)."""
    seconds = _expiry_seconds(expires)
    params: dict[str, str] = {"Bucket": bucket.config.bucket, "Key": bucket.key(key)}
    headers: dict[str, str] = {}
    if sha256 is not None:
        checksum = base64.b64encode(bytes.fromhex(check_blob_key(sha256))).decode("ascii")
        params["ChecksumSHA256"] = checksum
        headers["x-amz-checksum-sha256"] = checksum
    operation = "get_object" if method is HTTPMethod.GET else "put_object"
    with bucket.errors("presign", key):
        url = bucket.presigner.generate_presigned_url(
            operation, Params=params, ExpiresIn=seconds, HttpMethod=str(method)
        )
    expires_at = _signed_at(url) + timedelta(seconds=seconds)
    return PresignedURL(url, method, key, expires_at, headers)


# --- the blob store -----------------------------------------------------------------------------


class S3BlobStore:
    """A :class:`~offmaps.storage.base.BlobStore` below one prefix of an S3 bucket.

    Blobs are laid out as :class:`~offmaps.storage.LocalBlobStore` lays them out in a folder,
    ``PREFIX/ab/cd/abcd...`` (so a local store's folder syncs to a bucket as it is). A put
    hashes and spools the bytes, then asks whether the blob is there (``HEAD``): when it is, with
    the same size, nothing is sent. New bytes go up with their SHA-256 as S3's checksum, which
    the service checks before storing them. :meth:`verify` reads the bytes back and hashes them.

    Args:
        config: the bucket, prefix, endpoint and keys (:meth:`S3Config.from_url`).
        multipart_threshold: blobs larger than this go up in parts.
    """

    def __init__(self, config: S3Config, *, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.config = config
        self.multipart_threshold = multipart_threshold
        self._bucket = _Bucket(config)

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> S3BlobStore:
        """The store at ``s3://BUCKET/PREFIX``, configured from the environment
        (:meth:`S3Config.from_url`)."""
        return cls(S3Config.from_url(url, environ))

    def __repr__(self) -> str:
        return f"S3BlobStore({self.config.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # another process gets the configuration and makes its own client
        return (
            functools.partial(S3BlobStore, multipart_threshold=self.multipart_threshold),
            (self.config,),
        )

    def check(self) -> None:
        """Ask the service whether the bucket exists and the keys reach it.

        Raises:
            StorageError: it cannot be reached, the bucket is missing, or access is refused.
        """
        self._bucket.check()

    @staticmethod
    def _key(sha256: str) -> str:
        key = check_blob_key(sha256)
        return f"{key[:2]}/{key[2:4]}/{key}"

    @staticmethod
    def _missing(sha256: str) -> Callable[[], StorageError]:
        return lambda: BlobNotFoundError(f"no blob {sha256}", key=sha256)

    def presign_get(self, sha256: str, expires: timedelta) -> PresignedURL:
        """An S3 URL (SigV4) that lets its holder GET the blob until ``expires`` from now."""
        return _presign(self._bucket, self._key(sha256), HTTPMethod.GET, expires)

    def presign_put(self, sha256: str, expires: timedelta) -> PresignedURL:
        """An S3 URL (SigV4) that lets its holder PUT the blob's bytes until ``expires`` from
        now, bound to ``sha256``: the service refuses bytes that hash otherwise, and a request
        without the signed ``x-amz-checksum-sha256`` header (:attr:`PresignedURL.headers`)."""
        return _presign(self._bucket, self._key(sha256), HTTPMethod.PUT, expires, sha256)

    def put(self, data: bytes) -> BlobRef:
        """Store ``data``; returns its reference."""
        return self.put_stream((data,))

    def put_stream(
        self,
        stream: BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        max_size: int | None = None,
    ) -> BlobRef:
        """Store the bytes of a binary file or an iterable of chunks, hashing them first.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes came; nothing was sent.
            StorageError: the service failed or refused.
        """
        check_max_size(max_size)
        with _Spool().fill(iter_chunks(stream, max_size)) as spool:
            ref = BlobRef(spool.digest.hexdigest(), spool.size)
            key = self._key(ref.sha256)
            stored = self._bucket.head(key)
            if stored is None or int(stored["ContentLength"]) != ref.size:
                self._bucket.upload(
                    key,
                    spool.file,
                    spool.size,
                    spool.digest.digest(),
                    threshold=self.multipart_threshold,
                )
        return ref

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``."""
        with self.open(sha256) as stream:
            return stream.read()

    def open(self, sha256: str) -> BinaryIO:
        """A binary file streaming the blob; the caller closes it."""
        return self._bucket.open(self._key(sha256), self._missing(sha256))

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        return self._bucket.head(self._key(sha256)) is not None

    def size(self, sha256: str) -> int:
        """The size of a blob in bytes."""
        head = self._bucket.head(self._key(sha256))
        if head is None:
            raise self._missing(sha256)()
        return int(head["ContentLength"])

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every stored blob, in ascending order (other keys are skipped)."""
        skip = len(self.config.prefix)
        paginator = self._bucket.client.get_paginator("list_objects_v2")
        with self._bucket.errors("list", ""):
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
                for item in page.get("Contents", []):
                    match = _BLOB_KEY.fullmatch(item["Key"][skip:])
                    if match and match[3].startswith(match[1] + match[2]):
                        yield match[3]

    def verify(self, sha256: str) -> None:
        """Read the blob's bytes and hash them; raises ``BlobIntegrityError`` when they do not
        match its key."""
        digest = hashlib.sha256()
        with self.open(sha256) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            msg = f"blob {sha256} is damaged: its bytes hash to {digest.hexdigest()}"
            raise BlobIntegrityError(msg)

    def delete(self, sha256: str) -> None:
        """Remove a blob."""
        key = self._key(sha256)
        if self._bucket.head(key) is None:
            raise self._missing(sha256)()
        with self._bucket.errors("delete", key):
            self._bucket.client.delete_object(Bucket=self.config.bucket, Key=self._bucket.key(key))
