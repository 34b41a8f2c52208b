"""``python -m vidact.synthetic``: the same command as ``vidact-synthetic``."""

import sys

from vidact.synthetic.cli import main

sys.exit(main())
