"""Synthetic site photos: small JPEGs drawn with Pillow, one per chosen site.

They stand in for the photos a field crew attaches to a site: a plain colour picked from the
site's kind, with the kind, the OSM id and the name written on it. The sites are chosen with a
seeded random generator and the images are drawn without any clock, so every build gives the
same files.
"""

from __future__ import annotations

import csv
import hashlib
import random
from pathlib import Path

from offmaps.sample._features import Site

__all__ = ["PHOTO_COUNT", "PHOTO_SIZE", "write_photos"]

PHOTO_COUNT = 36
"""Photos made (fewer when there are fewer sites)."""

PHOTO_SIZE = (320, 240)
"""Width and height of a photo, in pixels."""

_SEED = 7


def _colour(kind: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(kind.encode()).digest()
    # keep it light enough for dark text to stay readable
    return (128 + digest[0] // 2, 128 + digest[1] // 2, 128 + digest[2] // 2)


def write_photos(folder: Path, sites: list[Site]) -> Path:
    """Draw the photos into ``folder`` (created) and list them in ``photos.csv`` there.

    Returns:
        The CSV, with columns ``osm_id`` and ``file`` (relative to the CSV's folder).

    Raises:
        ImportError: when Pillow is not installed.
    """
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415 - optional dependency

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(_SEED)  # noqa: S311 - synthetic sample data, not security
    chosen = sorted(rng.sample(sites, min(PHOTO_COUNT, len(sites))), key=lambda s: s.osm_id)
    font = ImageFont.load_default(size=18)
    csv_path = folder / "photos.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["osm_id", "file"])
        for site in chosen:
            image = Image.new("RGB", PHOTO_SIZE, _colour(site.kind))
            draw = ImageDraw.Draw(image)
            draw.rectangle((8, 8, PHOTO_SIZE[0] - 9, PHOTO_SIZE[1] - 9), outline=(60, 60, 60))
            lines = [site.kind.replace("_", " "), f"OSM node {site.osm_id}"]
            if site.name:
                lines.append(site.name[:30])
            lines.append("synthetic sample photo")
            for i, text in enumerate(lines):
                draw.text((20, 24 + 28 * i), text, fill=(30, 30, 30), font=font)
            name = f"site-{site.osm_id}.jpg"
            image.save(folder / name, format="JPEG", quality=85)
            writer.writerow([site.osm_id, name])
    return csv_path
