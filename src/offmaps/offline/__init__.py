"""Offline maps: parameters, extraction of replicas and tile archives, the offline package.

See docs/offline.md.
"""

__all__: list[str] = []
