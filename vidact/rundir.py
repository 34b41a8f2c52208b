"""What a run folder remembers: the recipe it trains (``OUT/recipe.json``), checked against the
recipe of a command that runs in it again.

The same command resumes; a command that asks for more epochs of the last stage extends the run
from its last checkpoint (said in one line); one that adds or drops ratios trains the ratios it
names; any other difference (the model, the clips, the optimization) is refused in one line that
names the differing settings and the ways out (another ``--out``, or ``--restart``). So
``recipe.json`` always describes what the folder's checkpoints were trained with.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vidact.cli import UsageError

log = logging.getLogger("vidact.train")

RUN_FILE = "recipe.json"
# Settings a re-run may change freely: how clips are loaded and how fast, not what is trained.
FREE = {"workers", "dali_threads", "dali_pipelines", "compile", "loader", "notes"}
# Settings added after run folders were written: one a folder's recipe.json lacks had its default.
ADDED = {"clips_per_video": 1}


def _stored(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e}); use another --out, or --restart to start over") from e


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _epochs(recipe: dict) -> list[int]:
    return [stage["epochs"] for stage in recipe["stages"]]


def _differences(old: dict, new: dict) -> dict[str, tuple]:
    """Settings (flag names) whose values differ, stage settings per stage, the last stage's
    epochs left out (they may grow)."""
    diffs = {k: (old.get(k, ADDED.get(k)), v) for k, v in new.items()
             if k not in FREE | {"stages", "ratios"} and old.get(k, ADDED.get(k)) != v}
    old_stages, new_stages = old.get("stages", []), new["stages"]
    if len(old_stages) != len(new_stages):
        diffs["stages"] = (len(old_stages), len(new_stages))
    for i, (a, b) in enumerate(zip(old_stages, new_stages)):
        prefix = "" if i == 0 else f"stage{i + 1}_"
        for k in b:
            if a.get(k) != b[k] and not (k == "epochs" and i == len(new_stages) - 1):
                diffs[prefix + k] = (a.get(k), b[k])
    return diffs


def check_rerun(out: Path, recipe: dict[str, Any], restart: bool, writer: bool = True) -> dict[str, Any]:
    """The recipe this run folder trains, after checking `recipe` (``Recipe.as_dict()`` plus the
    recipe's name, loader and shards) against what the folder holds: the same, longer (the last
    stage's epochs grown), other ratios, or refused. `restart` clears the folder's run first (by
    the `writer` process; the others take the new recipe as it is)."""
    old = _stored(out)
    if restart and not writer:
        return recipe
    if restart and old is not None:
        for item in out.iterdir():
            if item.name.startswith("ratio_") or item.name in (RUN_FILE, "summary.json", "accuracy_vs_ratio.png"):
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        log.info("%s: --restart: the earlier run's checkpoints and logs removed", out)
        return recipe
    if old is None:
        return recipe
    diffs = _differences(old, recipe)
    if diffs:
        said = "; ".join(f"{_flag(k)} {a!r} then, {b!r} now" for k, (a, b) in sorted(diffs.items()))
        raise UsageError(f"{out}: this run folder was trained with other settings ({said}); use another --out, "
                         "or --restart to start it over")
    before, after = _epochs(old)[-1], _epochs(recipe)[-1]
    if after < before:  # the folder holds more: nothing to train, and its recipe stays the longer one
        log.info("%s: trained for %d epochs in its last stage (this command asks %d): kept as it is", out, before,
                 after)
        recipe = {**recipe, "stages": [*recipe["stages"][:-1], {**recipe["stages"][-1], "epochs": before}]}
    if after > before:
        log.info("%s: extending the last stage from %d to %d epochs, from each ratio's last checkpoint (its "
                 "cosine schedule stretched to the new length)", out, before, after)
    if set(recipe["ratios"]) != set(old["ratios"]):
        log.info("%s: ratios %s (earlier %s): finished ratios are kept", out, recipe["ratios"], old["ratios"])
    return recipe
