"""Absolute links in responses, from the configured public URL or the request."""

from __future__ import annotations

from fastapi import Request

__all__ = ["absolute_url", "base_url"]


def absolute_url(request: Request, url: str) -> str:
    """``url`` as is when absolute; a path of this server (``/storage/...``) after its base URL."""
    return f"{base_url(request)}{url}" if url.startswith("/") else url


def base_url(request: Request) -> str:
    """The base URL without a trailing slash: ``public_url`` when set, else the request's."""
    configured: str | None = getattr(request.app.state, "public_url", None)
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")
