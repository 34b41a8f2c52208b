#!/usr/bin/env python3
"""Repack a video dataset into vidact WebDataset shards. `--help` explains layouts and options."""

import sys

from vidact.prep.make_shards import main

if __name__ == "__main__":
    sys.exit(main())
