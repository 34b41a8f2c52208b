"""Finds the clips of a source folder and accounts for every other entry in it.

Every entry below the source ends as exactly one of:
- a **clip**: a file FFmpeg decodes as a video (whatever its extension, see `vidact.video_probe`),
  or a frame folder with its images;
- a **layout file**: the split CSVs and ``dictionary.json`` (in ``--labels``, default the
  source), UCF-101's ``--ucf-splits`` folder: read, named in the manifest, counted nowhere;
- **rejected**, with its reason: a broken or unreadable video (zero-byte, truncated, a FIFO,
  a dangling symlink, a folder named like a video), an ambiguous or contradictory listing;
- **ignored**, with its reason: not a video (notes, thumbnails, hidden files) or a file that
  the split lists do not name.
A rejected folder accounts for what it holds. Rejected and ignored entries go to rejects.jsonl
with ``kind`` "rejected" / "ignored".
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from vidact.cli import UsageError
from vidact.ids import assign_ids
from vidact.prep.probe import probe_paths
from vidact.shards import SPLITS, UNLABELED
from vidact.video_probe import REJECTED, VIDEO, Probe, entry_problem, looks_like_video

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
LAYOUTS = ("videos", "frames", "unlabeled")
LABEL_FILES = tuple(f"{s}.csv" for s in SPLITS) + ("dictionary.json",)

Prober = Callable[[Sequence[Path]], list[Probe]]


@dataclass
class Source:
    id: str
    label: str | None
    split: str
    path: Path
    kind: str  # "video" or "frames"
    label_id: int = UNLABELED
    key: str = ""


@dataclass
class Plan:
    """What was found: classes, sources to pack, and every entry that will not be packed."""

    layout: str
    classes: list[str]
    sources: list[Source]
    rejects: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    layout_files: list[str] = field(default_factory=list)
    skip: set[Path] = field(default_factory=set)  # layout files and folders: not walked

    def reject(self, path: Path, reason: str) -> None:
        self.rejects.append({"kind": "rejected", "source": str(path), "reason": reason})

    def ignore(self, path: Path, reason: str) -> None:
        self.ignored.append({"kind": "ignored", "source": str(path), "reason": reason})

    def take(self, path: Path, probe: Probe, source: Source) -> None:
        """Keeps `source` if the probe found a video, else records why not."""
        if probe.verdict == VIDEO:
            self.sources.append(source)
        elif probe.verdict == REJECTED:
            self.reject(path, probe.reason)
        else:
            self.ignore(path, probe.reason)


# --------------------------------------------------------------------------- walking

def _natural(p: Path) -> list:
    """Sort key that puts frame_2 before frame_10 (names need no zero padding)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def images(folder: Path) -> list[Path]:
    """The frame images of a frame folder, in natural order (regular files, not hidden)."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS
                   and not p.name.startswith(".") and p.is_file()), key=_natural)


def _entries(folder: Path, plan: Plan) -> list[Path]:
    """Sorted entries of `folder`, less layout files; hidden ones (.DS_Store, macOS's ._x.avi
    companions) are ignored on the spot."""
    try:
        found = sorted(folder.iterdir())
    except OSError as e:
        plan.reject(folder, f"cannot list folder ({e.strerror})")
        return []
    out = []
    for p in found:
        if _abs(p) in plan.skip:
            continue
        if p.name.startswith("."):
            plan.ignore(p, "hidden file")
            continue
        out.append(p)
    return out


def _frame_folder(folder: Path, plan: Plan) -> bool:
    """True when `folder` holds frame images (its other entries are then ignored); a folder
    without any is rejected, whole."""
    frames = images(folder)
    if not frames:
        plan.reject(folder, "a folder, not a video file" if looks_like_video(folder) else "frame folder has no images")
        return False
    kept = set(frames)
    for p in _entries(folder, plan):
        if p not in kept:
            plan.ignore(p, "folder inside a frame folder" if p.is_dir() else "not a frame image")
    return True


def _file_candidates(folder: Path, plan: Plan) -> list[Path]:
    """Entries of `folder` that may be videos; what cannot be opened safely is rejected here."""
    out = []
    for p in _entries(folder, plan):
        problem = entry_problem(p)
        if problem:
            plan.reject(p, problem)
        else:
            out.append(p)
    return out


def detect_layout(root: Path) -> str:
    """Guesses the layout from names one and two levels down (content is probed later)."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.name not in LABEL_FILES)
    if any(looks_like_video(p) and p.is_file() for p in entries):
        return "unlabeled"
    for sub in (p for p in entries if p.is_dir()):
        children = sorted(sub.iterdir())
        if any(looks_like_video(c) and c.is_file() for c in children):
            return "videos"
        if any(c.is_file() and c.suffix.lower() in IMAGE_EXTS for c in children):
            return "unlabeled"
        if any(c.is_dir() and images(c) for c in children):
            return "frames"
    raise UsageError(f"{root}: no videos or frame folders found (layouts: {', '.join(LAYOUTS)}; "
                     "videos with other extensions: give --layout)")


def _read_dictionary(path: Path) -> list[str]:
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable dictionary ({e})") from e
    ids = sorted(mapping.values())
    if ids != list(range(len(ids))):
        raise UsageError(f"{path}: class ids must be 0..{len(ids) - 1} without gaps")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(path))


# --------------------------------------------------------------------------- layouts

def _unlabeled(root: Path, plan: Plan, prober: Prober) -> None:
    """SRC/{id}.* videos and SRC/{id}/ frame folders, label -1."""
    files = []
    for p in _entries(root, plan):
        if p.is_dir():
            if _frame_folder(p, plan):
                plan.sources.append(Source(p.name, None, "test", p, "frames"))
        elif problem := entry_problem(p):
            plan.reject(p, problem)
        else:
            files.append(p)
    for p, probe in zip(files, prober(files), strict=True):
        plan.take(p, probe, Source(p.stem, None, "test", p, "video"))


def _frame_clips(folder: Path, plan: Plan) -> None:
    for p in _entries(folder, plan):
        if not p.is_dir():
            plan.ignore(p, "not a frame folder")
        elif _frame_folder(p, plan):
            plan.sources.append(Source(p.name, folder.name, "train", p, "frames"))


def _class_folders(root: Path, kind: str, plan: Plan, prober: Prober) -> list[str]:
    """SRC/{label}/... labeled by folder name; returns the labels that have clips."""
    labels, files = [], []
    for folder in _entries(root, plan):
        if not folder.is_dir():
            plan.ignore(folder, "not in a class folder")
            continue
        labels.append(folder.name)
        if kind == "frames":
            _frame_clips(folder, plan)
        else:
            files += [(folder.name, p) for p in _file_candidates(folder, plan)]
    for (label, p), probe in zip(files, prober([p for _, p in files]), strict=True):
        plan.take(p, probe, Source(p.stem, label, "train", p, "video"))
    have = {s.label for s in plan.sources}
    for label in labels:
        if label not in have:
            plan.reject(root / label, "empty class folder")
    return [label for label in labels if label in have]


Listing = dict[Path, list[tuple[str, str, str]]]  # clip path -> [(label, split, list file name)]


def _sources_from_listing(listed: Listing, kind: str, plan: Plan) -> None:
    """One source per listed path; a path listed in two splits is rejected (it would leak)."""
    for path, rows in listed.items():
        splits = sorted({split for _, split, _ in rows})
        if len(splits) > 1:
            plan.reject(path, "listed with different splits: " + ", ".join(f"{s} in {n}" for _, s, n in rows))
            continue
        name = path.stem if kind == "video" else path.name
        plan.sources.append(Source(name, rows[0][0], splits[0], path, kind))


def _class_entries(root: Path, plan: Plan) -> list[Path]:
    """Every entry of every class folder (for lists that name clips); empty folders rejected."""
    out = []
    for folder in _entries(root, plan):
        if not folder.is_dir():
            plan.ignore(folder, "not in a class folder")
            continue
        items = _entries(folder, plan)
        if not items:
            plan.reject(folder, "empty class folder")
        out += items
    return out


def _csv_rows(labels_dir: Path, plan: Plan) -> list[tuple[str, str, str, str]]:
    """(id, label, split, csv name) of every row of train/val/test.csv."""
    rows = []
    for split in SPLITS:
        path = labels_dir / f"{split}.csv"
        if not path.is_file():
            continue
        plan.layout_files.append(str(path))
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                rows.append((row["id"].strip(), row["label"].strip(), (row.get("split") or split).strip(), path.name))
    return rows


def _resolve_ambiguous(ambiguous: list, listed: Listing, plan: Plan, prober: Prober) -> set[Path]:
    """A row whose id matches several files (x.avi, x.jpg): the one video among them is the
    clip; several videos are a clash the list cannot resolve, each rejected. Returns the paths
    recorded here."""
    paths = sorted({p for *_, cands in ambiguous for p in cands})
    verdict = dict(zip(paths, prober(paths), strict=True))
    handled: set[Path] = set()
    for clip_id, label, split, name, cands in ambiguous:
        videos = [p for p in cands if verdict[p].verdict == VIDEO]
        if len(videos) == 1:
            listed[videos[0]].append((label, split, name))
        for p in cands:
            if p in handled or (len(videos) == 1 and p == videos[0]):
                continue
            handled.add(p)
            if p in videos:
                plan.reject(p, f"ambiguous: '{clip_id}' in {name} matches {', '.join(v.name for v in videos)}")
            elif verdict[p].verdict == REJECTED:
                plan.reject(p, verdict[p].reason)
            else:
                plan.ignore(p, verdict[p].reason)
    return handled


def _listed_in_csvs(root: Path, labels_dir: Path, kind: str, plan: Plan, prober: Prober) -> None:
    """Clips named by stem (`id`) in the split CSVs, found as SRC/{label}/{id}.*."""
    index: dict[tuple[str, str], list[Path]] = defaultdict(list)
    entries = _class_entries(root, plan)
    for p in entries:
        if kind == "video" or p.is_dir():
            index[(p.parent.name, p.name if kind == "frames" else p.stem)].append(p)
    listed: Listing = defaultdict(list)
    ambiguous = []
    rows = _csv_rows(labels_dir, plan)
    for clip_id, label, split, name in rows:
        direct = root / label / clip_id  # a row that gives the file name, extension included
        cands = [direct] if direct in index.get((label, Path(clip_id).stem), ()) else index.get((label, clip_id), [])
        if not cands:
            plan.reject(root / label / clip_id, f"listed in {name} but not found")
        elif len(cands) > 1:
            ambiguous.append((clip_id, label, split, name, cands))
        else:
            listed[cands[0]].append((label, split, name))
    handled = _resolve_ambiguous(ambiguous, listed, plan, prober) if ambiguous else set()
    _sources_from_listing(listed, kind, plan)
    lists = ", ".join(sorted({r[3] for r in rows}, key=lambda n: LABEL_FILES.index(n)))
    for p in entries:
        if p not in listed and p not in handled:
            plan.ignore(p, f"not listed in {lists}")


def _listed_in_ucf(root: Path, lists: Path, fold: int, plan: Plan) -> list[str]:
    """UCF-101's classInd.txt / trainlist0N.txt / testlist0N.txt (test -> 'test' split)."""
    class_ind = lists / "classInd.txt"
    if not class_ind.is_file():
        raise UsageError(f"{class_ind}: missing (needed with --ucf-splits)")
    plan.skip.add(_abs(lists))  # the lists folder may sit inside SRC: it holds no clips
    classes = [line.split()[1] for line in class_ind.read_text().splitlines() if line.strip()]
    listed: Listing = defaultdict(list)
    names = (f"trainlist{fold:02d}.txt", f"testlist{fold:02d}.txt")
    for split, name in zip(("train", "test"), names):
        path = lists / name
        if not path.is_file():
            raise UsageError(f"{path}: missing (fold {fold})")
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]
            clip = root / rel
            if not os.path.lexists(clip):  # a dangling symlink is found, and rejected later
                plan.reject(clip, f"listed in {name} but not found")
                continue
            listed[clip].append((rel.split("/", 1)[0], split, name))
    plan.layout_files += [str(class_ind)] + [str(lists / n) for n in names]
    _sources_from_listing(listed, "video", plan)
    for p in _class_entries(root, plan):
        if p not in listed:
            plan.ignore(p, f"not listed in {', '.join(names)}")
    return classes


def _apply_labels(plan: Plan) -> None:
    """Class ids from the class list; a label outside it rejects the clip."""
    index = {name: i for i, name in enumerate(plan.classes)}
    kept = []
    for s in plan.sources:
        if s.label is not None:
            if s.label not in index:
                plan.reject(s.path, f"label '{s.label}' not in the class list")
                continue
            s.label_id = index[s.label]
        kept.append(s)
    plan.sources = kept


def discover(root: Path, layout: str | None = None, labels_dir: Path | None = None,
             ucf_splits: Path | None = None, fold: int = 1, prober: Prober | None = None) -> Plan:
    """Finds sources, labels and splits (see the CLI help for the rules). `prober` decides which
    files are videos (default: :func:`vidact.prep.probe.probe_paths` in one killable worker)."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    layout = layout or detect_layout(root)
    prober = prober or partial(probe_paths, workers=1, timeout=600.0)
    labels_dir = labels_dir or root
    plan = Plan(layout, [], [])
    plan.skip |= {_abs(labels_dir / n) for n in LABEL_FILES if (labels_dir / n).is_file()}
    dictionary = labels_dir / "dictionary.json"
    read_dictionary = dictionary.is_file()
    if layout == "unlabeled":
        _unlabeled(root, plan, prober)
        plan.classes = _read_dictionary(dictionary) if read_dictionary else []
    elif ucf_splits is not None:
        plan.classes, read_dictionary = _listed_in_ucf(root, ucf_splits, fold, plan), False
    elif any((labels_dir / f"{s}.csv").is_file() for s in SPLITS):
        if not read_dictionary:
            raise UsageError(f"{dictionary}: missing (needed beside the split CSVs)")
        plan.classes = _read_dictionary(dictionary)
        _listed_in_csvs(root, labels_dir, "frames" if layout == "frames" else "video", plan, prober)
    else:
        found = _class_folders(root, "frames" if layout == "frames" else "video", plan, prober)
        plan.classes = _read_dictionary(dictionary) if read_dictionary else found
    if read_dictionary:
        plan.layout_files.append(str(dictionary))
    _apply_labels(plan)
    assign_ids(plan.sources, root)
    return plan
