"""The map server's HTTP edge: ``create_app(settings)`` serving web maps, feature and tile
services, offline jobs and sync.

Layer 7 of DESIGN.md, the only package that speaks HTTP frameworks (import-linter checks it).
It parses requests, calls the services of :mod:`offmaps.services`, maps domain errors to problem
documents in one table (:mod:`offmaps.server.problems`) and serialises. Needs the ``server``
extra (FastAPI, uvicorn, PyJWT, argon2-cffi).
"""

from offmaps.server.app import create_app

__all__ = ["create_app"]
