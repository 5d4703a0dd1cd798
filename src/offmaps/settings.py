"""Typed server settings, read from ``OFFMAPS_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AuthSettings", "ServerSettings"]


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
        storage_secret: the secret presigned URLs of the object store are signed with (at
            least 16 bytes; the same in every process that must accept them); by default one is
            generated into ``data_dir/storage-key``.
    """

    model_config = SettingsConfigDict(env_prefix="OFFMAPS_", env_nested_delimiter="__")

    data_dir: Path = Path("offmaps-data")
    public_url: str | None = None
    features_url: str | None = None
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    signing_key: SecretStr | None = None
    storage_secret: SecretStr | None = Field(default=None, min_length=16)
    auth: AuthSettings = Field(default_factory=AuthSettings)
