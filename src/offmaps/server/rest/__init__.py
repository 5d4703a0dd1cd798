"""The REST routers of the map server: each handler parses, calls a service, and serialises.

- :mod:`.features`: OGC API – Features (collections, items, edits) and attachments.
- :mod:`.tiles`: XYZ, TileJSON 3.0 and OGC API – Tiles; :mod:`.tms`: tiling schemes.
- :mod:`.webmaps`: web map items.
- :mod:`.offline`: offline capabilities, estimates, generate jobs and their files.
- :mod:`.deps`: what handlers are given (the catalog, the services, the caller).
- :mod:`.sync`: replicas, change sets, downloads, attachment uploads, the review queue.
"""
