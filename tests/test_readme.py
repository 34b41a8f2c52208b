"""The README's code stays true: its "own training loop" block runs as written (on the test
shard set instead of the demo's)."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import ROOT


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_own_training_loop_runs(synthetic_shards):
    code = readme_block("### Use the loader in your own training loop")
    assert code.count('"shards/synthetic"') == 2
    code = code.replace('"shards/synthetic"', repr(str(synthetic_shards)))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [x for x in p.stdout.splitlines() if x.startswith("epoch")]
    assert len(lines) == 2 and lines[1].startswith("epoch 1: 3 batches, last loss "), p.stdout  # 12 clips, batch 4


def test_the_console_scripts_the_readme_lists_are_pyprojects():
    """The README's list of console scripts (Training section) names every script pyproject.toml
    installs, and no other."""
    import tomllib

    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    text = (ROOT / "README.md").read_text()
    listed = text[text.index("Every command is also a console script of the package"):]
    listed = set(re.findall(r"`(vidact-[a-z]+)`", listed[:listed.index("(the same as")]))
    assert listed == scripts


def test_the_readmes_paths_are_the_demos():
    """Commands in the README that read the demo's run name the folder `make demo` writes."""
    text = (ROOT / "README.md").read_text()
    assert "runs/demo/" in text
    for m in re.finditer(r"(\S*)runs/demo/", text):
        assert m.group(1).endswith("demo/"), m.group(0)
