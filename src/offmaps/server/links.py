"""Absolute links in responses, from the configured public URL or the request."""

from __future__ import annotations

from fastapi import Request

__all__ = ["base_url"]


def base_url(request: Request) -> str:
    """The base URL without a trailing slash: ``public_url`` when set, else the request's."""
    configured: str | None = getattr(request.app.state, "public_url", None)
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")
