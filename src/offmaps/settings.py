"""Typed server settings, read from ``OFFMAPS_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AuthSettings", "LimitSettings", "ServerSettings"]


class AuthSettings(BaseSettings):
    """How tokens are issued and checked.

    Attributes:
        token_lifetime_s: how long an issued access token is valid.
        issuer: the ``iss`` of issued tokens (default: the server's public URL).
        audience: the ``aud`` of issued tokens, and required of external ones.
        jwks_url: an external identity provider's JWKS; its tokens are accepted too.
        external_issuer: the ``iss`` required of external tokens.
        anonymous_scopes: scopes granted without a token (public items only).
    """

    model_config = SettingsConfigDict(env_prefix="OFFMAPS_AUTH_")

    token_lifetime_s: int = Field(default=3600, ge=60, le=86_400 * 30)
    issuer: str | None = None
    audience: str = "offmaps"
    jwks_url: str | None = None
    external_issuer: str | None = None
    anonymous_scopes: tuple[str, ...] = ("maps:read",)


class LimitSettings(BaseSettings):
    """What one user may ask of the server: quotas, and the rate of write requests.

    A caller over a quota or the rate limit gets 429 with ``Retry-After`` (docs/server.md).

    Attributes:
        jobs_per_user: generate jobs a user may have pending or running at once.
        replicas_per_user: replicas a user may have registered (each offline map taken with
            sync registers one per feature service; unregister them with
            ``DELETE /api/replicas/{id}``).
        job_bytes_per_user: bytes of finished jobs' files a user may have kept (jobs are kept
            ``job_keep_s``, a day by default, or until deleted with ``DELETE /api/jobs/{id}``);
            a job is refused when what is kept and its estimate would go over.
        writes_per_minute: write requests (``POST``, ``PUT``, ``PATCH``, ``DELETE``) a user,
            or a client address without a token, may send in a moving window of one minute.
        rate_limit_storage: where the rate limiter counts, as a ``limits`` storage URL:
            ``memory://`` (one process), or ``redis://host:port`` shared by several.
        quota_retry_after_s: the ``Retry-After`` of a refusal for replicas, which free only
            when the user unregisters one.
    """

    model_config = SettingsConfigDict(env_prefix="OFFMAPS_LIMITS_")

    jobs_per_user: int = Field(default=2, ge=1)
    replicas_per_user: int = Field(default=50, ge=1)
    job_bytes_per_user: int = Field(default=4 * 1024**3, ge=1024)
    writes_per_minute: int = Field(default=300, ge=1)
    rate_limit_storage: str = "memory://"
    quota_retry_after_s: int = Field(default=3600, ge=1)


class ServerSettings(BaseSettings):
    """Everything ``create_app`` needs.

    Attributes:
        data_dir: the server's data folder: feature services (GeoPackages), blobs, tile caches,
            users, web maps, the token signing key.
        public_url: the URL clients reach the server at, for links (default: from the request).
        features_url: a ``postgresql://`` URL to keep feature services in PostGIS instead of
            GeoPackage files in ``data_dir``.
        max_body_bytes: the largest request body accepted (413 beyond).
        signing_key: a secret for HS256 tokens; by default an RS256 key pair is generated into
            ``data_dir`` and published at ``/.well-known/jwks.json``.
        database_url: a ``postgresql://`` URL for the server's own state instead of SQLite files
            in ``data_dir``: so far the tile caches' index, the jobs and the replicas (every
            server process and worker then shares them); users, web maps, map areas and the
            sync state follow with the scale-out work.
        database_schema: the prefix of the schemas offmaps makes in that database
            (``<prefix>_cache`` for the tile caches, ``<prefix>_state`` for the state stores).
        database_migrate: whether a process starting on state tables of an older version
            upgrades them itself (as ``offmaps db upgrade`` does) instead of refusing to start.
        database_pool_size: the most connections to that database each state store of a
            process holds at once.
        storage_url: ``s3://BUCKET/PREFIX`` to keep bytes in S3-compatible storage instead of
            ``data_dir``: jobs' files below ``PREFIX/objects/``, the tile caches' blobs below
            ``PREFIX/tile-caches/blobs/``. The endpoint and keys come from ``OFFMAPS_S3_*`` or
            the standard ``AWS_*`` variables (docs/storage.md).
        storage_secret: the secret presigned URLs of the object store are signed with (at
            least 16 bytes; the same in every process that must accept them); by default one is
            generated into ``data_dir/storage-key``.
        seed_processes: the most worker processes a large seed of an upstream spreads over, at
            most one per request it may have in flight (default: two per CPU; 1 seeds in the
            server's own process).
        job_keep_s: seconds an ended job, its files (offline map packages, cache exports) and
            the archive an import was given are kept before they are removed (a day by
            default; looked at every few minutes and whenever a job starts).
        import_max_bytes: the largest tile archive a user may upload for a cache import.
        area_keep_packages: how many of a preplanned map area's newest packages are kept.
        area_scheduler: whether this process refreshes preplanned map areas on their schedule
            (turn it off on all but one process if several serve one data folder).
        area_scheduler_tick_s: how often the scheduler looks for areas whose refresh is due.
        download_redirect_s: when above 0, a download of a package's or a job's file answers
            ``307`` with a presigned URL of the object store valid this long (S3's own, or the
            data folder's ``/storage/...``), so the bytes do not pass through the server; 0
            streams them through it.
        queue_url: a ``redis://`` URL: jobs are queued there and run by ``offmaps worker``
            processes instead of in the server's own process (docs/architecture.md, "The job
            queue"). Every server and worker process must share the job store (the same data
            folder, or the same ``database_url``) and the object store.
        queue_namespace: the prefix of this deployment's keys in Redis (several deployments
            may share one Redis server, each with its own namespace).
        queue_heartbeat_s: seconds without a worker's heartbeat after which its jobs go back on
            the queue, for another worker to run again.
        queue_maintenance_chance: how many of a million Redis commands look for dead workers'
            jobs (an idle worker polls about once a second).
        auth: how tokens are issued and checked.
        limits: per-user quotas and the write rate limit.
    """

    model_config = SettingsConfigDict(env_prefix="OFFMAPS_", env_nested_delimiter="__")

    data_dir: Path = Path("offmaps-data")
    public_url: str | None = None
    features_url: str | None = None
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    signing_key: SecretStr | None = None
    database_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    database_schema: str = Field(default="offmaps", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    database_migrate: bool = False
    database_pool_size: int = Field(default=10, ge=1, le=200)
    storage_url: str | None = Field(default=None, pattern=r"^s3://")
    storage_secret: SecretStr | None = Field(default=None, min_length=16)
    seed_processes: int | None = Field(default=None, ge=1, le=64)
    job_keep_s: float = Field(default=24 * 3600, ge=60)
    import_max_bytes: int = Field(default=16 * 1024**3, ge=1024)
    area_keep_packages: int = Field(default=3, ge=1, le=1000)
    area_scheduler: bool = True
    area_scheduler_tick_s: float = Field(default=30.0, ge=1, le=3600)
    download_redirect_s: int = Field(default=0, ge=0, le=7 * 86_400)
    queue_url: str | None = Field(default=None, pattern=r"^rediss?://")
    queue_namespace: str = Field(default="offmaps", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    queue_heartbeat_s: float = Field(default=60.0, ge=1, le=3600)
    queue_maintenance_chance: int = Field(default=10_000, ge=1, le=1_000_000)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
