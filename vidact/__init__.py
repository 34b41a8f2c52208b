"""vidact: video action recognition with DALI data loading (GPU decode, CPU fallback)."""

__version__ = "0.1.0"
