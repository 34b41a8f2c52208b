"""The console scripts installed with the package: present, named as the user typed them, every
flag explained, one exit status for bad input; and the benchmark running from a wheel installed
outside the checkout."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from vidact import cli

ROOT = Path(__file__).resolve().parents[1]
# From the installed package's metadata: what `pip install` put on the PATH.
SCRIPTS = {e.name: e.value for e in distribution("vidact").entry_points if e.group == "console_scripts"}


def test_every_command_has_a_console_script():
    assert {"vidact-shards", "vidact-train", "vidact-eval", "vidact-predict", "vidact-preview",
            "vidact-bench", "vidact-export", "vidact-synthetic"} <= set(SCRIPTS)


def test_the_console_scripts_are_pyprojects():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == SCRIPTS, "the installed package is stale: pip install -e ."


def test_every_console_script_is_installed_and_its_help_names_it():
    """Each script's ``--help`` (run at once: each starts a Python that imports torch and DALI)."""
    scripts = {name: Path(sys.executable).parent / name for name in sorted(SCRIPTS)}
    missing = [str(s) for s in scripts.values() if not s.is_file()]
    assert not missing, f"{missing} missing: reinstall the package (pip install -e .)"
    running = {name: subprocess.Popen([str(s), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, s in scripts.items()}
    for name, p in running.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"{name}: {err[-2000:]}"
        assert out.startswith(f"usage: {name} ") and "--help" in out, out[:200]


def parser_of(entry: str) -> argparse.ArgumentParser:
    module = importlib.import_module(entry.partition(":")[0])
    return module.build_parser()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_flag_of_every_command_has_help(name, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"/somewhere/bin/{name}"])
    p = parser_of(SCRIPTS[name])
    assert p.prog == name
    missing = [a.option_strings or [a.dest] for a in p._actions
               if not isinstance(a, argparse._HelpAction) and (not a.help or a.help == argparse.SUPPRESS)]
    assert not missing, f"{name}: flags without help: {missing}"


def test_one_flag_name_means_one_thing():
    """Across commands, a flag's help says the same kind of thing: ``--workers`` processes,
    ``--dali-threads`` threads, ``--crop-size`` the crop."""
    seen: dict[str, list[str]] = {}
    for entry in SCRIPTS.values():
        for a in parser_of(entry)._actions:
            for flag in a.option_strings:
                seen.setdefault(flag, []).append((a.help or "").lower())
    assert all("process" in h for h in seen["--workers"]), seen["--workers"]
    assert all("thread" in h for h in seen["--dali-threads"]), seen["--dali-threads"]
    assert all("crop" in h for h in seen["--crop-size"]), seen["--crop-size"]
    assert "--size" not in seen  # it meant the crop in some commands, the model in others' words


def test_prog_is_the_name_the_command_was_run_by(monkeypatch):
    for argv0, want in (("/venv/bin/vidact-train", "vidact-train"),
                        (str(ROOT / "tools" / "bench.py"), "tools/bench.py"),
                        (str(ROOT / "vidact" / "train.py"), "python -m vidact.train")):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert cli.prog("vidact.train") == want


@pytest.mark.parametrize("argv", [["SRC", "--out", "OUT", "--val-fraction", "1.5"],
                                  ["/no/such/folder", "--out", "OUT"]])
def test_make_shards_bad_input_exits_2_in_one_line(argv, tmp_path):
    argv = [str(tmp_path / a) if a in ("SRC", "OUT") else a for a in argv]
    (tmp_path / "SRC").mkdir()
    p = subprocess.run([str(Path(sys.executable).parent / "vidact-shards"), *argv], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == cli.EXIT_USAGE, p.stderr
    assert p.stderr.startswith("vidact-shards: ") and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.slow
def test_the_benchmark_runs_from_a_wheel_outside_the_checkout(synthetic_shards, tmp_path):
    """`vidact-bench` from a wheel installed into a folder of its own (not the checkout's editable
    install), run from another folder: it re-encodes a sweep resolution through the package's own
    make_shards and caches under the user's cache folder."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("vidact-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    where = subprocess.run([sys.executable, "-c", "import vidact; print(vidact.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path / "site")), where
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "vidact.bench.cli", "--shards", str(synthetic_shards), "--quick",
                        "--device", "cpu", "--resolutions", "native", "48", "--sweep-clips", "4", "--frames", "4",
                        "--crop-size", "32", "--batch-sizes", "2", "--batches", "1", "--repeats", "1", "--warmup", "0",
                        "--no-end-to-end", "--workers", "0", "--json", str(out)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [s["resolution"] for s in report["sources"]] == ["native", "48p"]
    assert str(tmp_path / "cache" / "vidact" / "bench") in report["sources"][1]["path"]
    assert report["versions"]["git"] is None  # no checkout behind it


def test_progress_in_a_log_says_how_far_and_how_long(monkeypatch, caplog):
    """Where no bar shows (stderr is no terminal, as under pytest), long work logs a line every
    PROGRESS_EVERY_S: done of total, the caller's rate, the time left; every item comes through."""
    import logging

    from vidact import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    log = logging.getLogger("vidact.test_progress")
    with caplog.at_level(logging.INFO, logger="vidact.test_progress"):
        got = list(cli.progress(iter("abc"), 3, "encoding", "clips", log, lambda: "12 frames/s"))
    assert got == ["a", "b", "c"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("encoding: 1/3 clips, 12 frames/s, about ") and lines[0].endswith(" left")
    assert len(lines) == 3 and lines[-1].startswith("encoding: 3/3 clips")
