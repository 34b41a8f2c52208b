#!/usr/bin/env python3
"""Write a small, seeded, learnable synthetic action dataset. `--help` explains layouts and options."""

import sys

from vidact.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
