"""offmaps: take web maps offline, edit them in the field, bring the edits home safely.

The package is layered (see docs/architecture.md): ``errors``/``types`` at the bottom, then
``tiling`` (pure tiling maths), ``containers`` (tile archives), and the ``cli`` on top.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offmaps")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
