"""The map server: ``create_app(settings)`` serving web maps, feature and tile services.

Layer 5 of DESIGN.md. Needs the ``server`` extra (FastAPI, uvicorn, PyJWT, argon2-cffi).
"""

from __future__ import annotations

__all__: list[str] = []
