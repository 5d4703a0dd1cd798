"""The REST routers of the map server: each handler parses, calls a service, and serialises.

- :mod:`.features`: OGC API – Features (collections, items, edits) and attachments.
- :mod:`.tiles`: XYZ, TileJSON 3.0, OGC API – Tiles and tiling schemes.
- :mod:`.webmaps`: web map items.
- :mod:`.offline`: offline capabilities, estimates, generate jobs and their files.
- :mod:`.sync`: replicas, change sets, downloads, attachment uploads, the review queue.
"""
