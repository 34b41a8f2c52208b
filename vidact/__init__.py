"""vidact: video action recognition with DALI data loading (GPU decode, CPU fallback)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vidact")  # one definition: pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
