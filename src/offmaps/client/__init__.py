"""The offmaps SDK: talk to an offmaps server over HTTP (httpx).

Layer 5 of DESIGN.md, beside the server, which it never imports. Errors from the server's
problem documents are raised again as the same :mod:`offmaps.errors` classes.
"""

from __future__ import annotations

from offmaps.client.portal import Credentials, Portal, WebMapSummary

__all__ = ["Credentials", "Portal", "WebMapSummary"]
