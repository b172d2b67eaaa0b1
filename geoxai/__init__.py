"""geoxai: explain visual place recognition descriptors by generating images from them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geoxai")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from geoxai.errors import GeoxaiError

__all__ = ["GeoxaiError", "__version__"]
