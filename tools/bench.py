#!/usr/bin/env python3
"""Loader and end-to-end training throughput of vidact, side by side. `--help` is the manual."""

import sys

from vidact.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
