"""The console scripts installed with the package: present, and each explains itself."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

# From the installed package's metadata: what `pip install` put on the PATH.
SCRIPTS = {e.name: e.value for e in distribution("vidact").entry_points if e.group == "console_scripts"}


def test_every_command_has_a_console_script():
    assert {"vidact-shards", "vidact-train", "vidact-eval", "vidact-predict", "vidact-preview",
            "vidact-bench", "vidact-export"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_is_installed_and_has_help(name):
    script = Path(sys.executable).parent / name
    assert script.is_file(), f"{script} missing: reinstall the package (pip install -e .)"
    p = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout and "--help" in p.stdout
