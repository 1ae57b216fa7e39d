"""The append-only store of human corrections (``data/corrections/``) and the merge rules (DESIGN.md §3).

Store. ``pull`` adds one file per pull that brings something new, named ``<UTC yyyymmddTHHMMSSZ>-<hash>.json``; the
format is docs/contracts/labelstudio.md (``poseloop-corrections/1``). Files are never rewritten or deleted: they are the
only copy of the annotators' work once Label Studio is gone, so every reader raises on a file it cannot read rather
than skip it. The hash is the first 12 hex digits of the sha256 of the file's bytes, so a file can be checked against
its name (``sha256sum``).

Identity of a record (what makes a pulled record "already stored"):

* a correction from Label Studio: ``(task_id, annotation_id)``. An annotation edited after it was pulled keeps its ids
  and is therefore not pulled again; the first submitted version is the one stored.
* a correction without a task id (an inbox file): ``(instance_id, completed_at, keypoints)``.
* a skip: ``(instance_id, task_id, annotation_id, reason)``.

Merge. ``merge`` is a pure function of the seed labels, the pool and the store's records: the same inputs give the same
dict, so re-running the stage gives the same bytes and DVC sees no change. Times are compared as instants (parsed
ISO-8601), not as strings: ``...:00.5Z`` sorts before ``...:00Z`` as text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import operator
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

log = logging.getLogger(__name__)

STORE_FORMAT = "poseloop-corrections/1"
SkipReason = Literal["skipped", "cancelled", "no_person"]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)
_STORE_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}\.json$")


# ------------------------------------------------------------------------------------------------ field validation


def _is_int(value: Any) -> bool:
    # bool is an int subclass; a true/false where an id belongs is a bug in whatever wrote the record.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # numbers.Real takes numpy scalars too (pull may compute with numpy); bool and numpy's bool_ are not numbers here.
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and math.isfinite(value)


def _parse_time(text: str) -> datetime:
    """ISO-8601 -> an aware datetime; a time without a zone is taken as UTC (Label Studio writes UTC)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _check_time(text: str, what: str) -> None:
    try:
        _parse_time(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not an ISO-8601 time: {text!r:.60}") from exc


def _set_ids(record: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    """Ids as plain ints on a frozen record: numpy ids from pandas would not serialise. ``operator.index`` refuses
    floats and strings instead of truncating or parsing them."""
    for name in (*required, *optional):
        value = getattr(record, name)
        if value is None and name in optional:
            continue
        if isinstance(value, bool):
            raise TypeError(f"{type(record).__name__}.{name}: expected an integer id, got {value!r}")
        object.__setattr__(record, name, operator.index(value))


class _Fields:
    """Typed access to one JSON record; every error names the file, the record and the field."""

    def __init__(self, d: Any, file: str, record: str) -> None:
        self.where = f"{file}: {record}"
        if not isinstance(d, dict):
            raise ValueError(f"{self.where}: expected an object, got {type(d).__name__}")
        self.d = d

    def fail(self, name: str, message: str) -> ValueError:
        return ValueError(f"{self.where}: field '{name}': {message}")

    def get(self, name: str) -> Any:
        if name not in self.d:
            raise self.fail(name, "missing")
        return self.d[name]

    def int_(self, name: str) -> int:
        value = self.get(name)
        if not _is_int(value):
            raise self.fail(name, f"expected an integer, got {value!r:.60}")
        return value

    def opt_int(self, name: str) -> int | None:
        return None if self.get(name) is None else self.int_(name)

    def str_(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {value!r:.60}")
        return value

    def opt_str(self, name: str) -> str | None:
        return None if self.get(name) is None else self.str_(name)

    def time(self, name: str) -> str:
        value = self.str_(name)
        try:
            _parse_time(value)
        except ValueError as exc:
            raise self.fail(name, f"not an ISO-8601 time: {value!r:.60}") from exc
        return value

    def numbers(self, name: str) -> list[float]:
        value = self.get(name)
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise self.fail(name, f"expected a list of finite numbers, got {value!r:.60}")
        return value


def _bbox(values: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    return (x, y, w, h)


def _keypoints(values: Sequence[float]) -> tuple[float, ...]:
    """Canonical keypoints: x, y as float, the COCO flag as int (so equal data gives equal bytes and equal keys)."""
    return tuple(int(v) if i % 3 == 2 else float(v) for i, v in enumerate(values))


def _keypoint_problem(values: Sequence[float]) -> str | None:
    """Why a flat x, y, v list is not COCO keypoints (None when it is)."""
    if not all(_is_number(v) for v in values):
        return "expected finite numbers"
    if len(values) % 3:
        return f"length {len(values)} is not a multiple of 3 (x, y, v per keypoint)"
    bad = [v for v in values[2::3] if v not in (0, 1, 2)]
    if bad:
        return f"visibility must be 0, 1 or 2, got {bad[0]!r}"
    return None


# ---------------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Correction:
    """One completed annotation of one person instance.

    ``instance_id`` is the annotation id in pool.json (or labeled.json, for a corrected seed label). ``bbox`` is
    (x, y, w, h) and ``keypoints`` the flat (3K,) x, y, v list, both in image pixels; v is the COCO flag (2 visible,
    1 labeled but occluded, 0 not labeled). ``completed_at`` is an ISO-8601 UTC time. ``task_id`` / ``annotation_id``
    are Label Studio's, None for inbox files that have none.
    """

    instance_id: int
    image_id: int
    bbox: tuple[float, float, float, float]
    keypoints: tuple[float, ...]
    task_id: int | None
    annotation_id: int | None
    annotator: str | None
    completed_at: str
    model_version: str | None

    def __post_init__(self) -> None:
        # Records built in code (pull) get the checks from_json gives file records, and the canonical number types,
        # so equal data has equal keys and bytes whatever produced it (numpy scalars included).
        problem = _keypoint_problem(self.keypoints) or (None if len(self.bbox) == 4 else "bbox needs 4 numbers")
        if problem or not all(_is_number(v) for v in self.bbox):
            raise ValueError(f"correction of instance {self.instance_id}: {problem or 'bbox not finite numbers'}")
        _check_time(self.completed_at, f"correction of instance {self.instance_id}: completed_at")
        _set_ids(self, ("instance_id", "image_id"), ("task_id", "annotation_id"))
        object.__setattr__(self, "bbox", _bbox(self.bbox))
        object.__setattr__(self, "keypoints", _keypoints(self.keypoints))

    @property
    def correction_id(self) -> str:
        """``"<task_id>:<annotation_id>"`` as written to train.json (``"None:None"`` for an inbox record)."""
        return f"{self.task_id}:{self.annotation_id}"

    def key(self) -> tuple:
        """Identity in the store (see the module doc); the tag keeps the two kinds of key apart."""
        if self.task_id is None:
            return ("inbox", self.instance_id, self.completed_at, self.keypoints)
        return ("task", self.task_id, self.annotation_id)

    def to_json(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "image_id": self.image_id,
            "bbox": list(self.bbox),
            "keypoints": list(self.keypoints),
            "task_id": self.task_id,
            "annotation_id": self.annotation_id,
            "annotator": self.annotator,
            "completed_at": self.completed_at,
            "model_version": self.model_version,
        }

    @classmethod
    def from_json(cls, d: Any, file: str = "<corrections>", index: int = 0) -> Correction:
        """Parse one record; a missing or ill-typed field raises ValueError naming ``file``, the index and the field."""
        f = _Fields(d, file, f"corrections[{index}]")
        bbox = f.numbers("bbox")
        if len(bbox) != 4:
            raise f.fail("bbox", f"expected [x, y, width, height], got {len(bbox)} numbers")
        kps = f.numbers("keypoints")
        problem = _keypoint_problem(kps)
        if problem:
            raise f.fail("keypoints", problem)
        return cls(
            instance_id=f.int_("instance_id"),
            image_id=f.int_("image_id"),
            bbox=_bbox(bbox),
            keypoints=_keypoints(kps),
            task_id=f.opt_int("task_id"),
            annotation_id=f.opt_int("annotation_id"),
            annotator=f.opt_str("annotator"),
            completed_at=f.time("completed_at"),
            model_version=f.opt_str("model_version"),
        )


@dataclass(frozen=True)
class Skip:
    """A task the annotator skipped or cancelled, or marked as showing no person (``reason`` "no_person")."""

    instance_id: int
    task_id: int | None
    annotation_id: int | None
    annotator: str | None
    at: str
    reason: SkipReason

    def __post_init__(self) -> None:
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"skip of instance {self.instance_id}: reason {self.reason!r} not in {list(SKIP_REASONS)}")
        _check_time(self.at, f"skip of instance {self.instance_id}: at")
        _set_ids(self, ("instance_id",), ("task_id", "annotation_id"))

    def key(self) -> tuple:
        return (self.instance_id, self.task_id, self.annotation_id, self.reason)

    def to_json(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "task_id": self.task_id,
            "annotation_id": self.annotation_id,
            "annotator": self.annotator,
            "at": self.at,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, d: Any, file: str = "<corrections>", index: int = 0) -> Skip:
        f = _Fields(d, file, f"skipped[{index}]")
        reason = f.str_("reason")
        if reason not in SKIP_REASONS:
            raise f.fail("reason", f"expected one of {list(SKIP_REASONS)}, got {reason!r:.60}")
        return cls(
            instance_id=f.int_("instance_id"),
            task_id=f.opt_int("task_id"),
            annotation_id=f.opt_int("annotation_id"),
            annotator=f.opt_str("annotator"),
            at=f.time("at"),
            reason=reason,  # type: ignore[arg-type]  # checked above
        )


@dataclass(frozen=True)
class Problem:
    """An annotation pull could not turn into a correction (unknown label, point outside the image, ...)."""

    task_id: int | None
    annotation_id: int | None
    message: str

    def to_json(self) -> dict:
        return {"task_id": self.task_id, "annotation_id": self.annotation_id, "message": self.message}

    @classmethod
    def from_json(cls, d: Any, file: str = "<corrections>", index: int = 0) -> Problem:
        f = _Fields(d, file, f"problems[{index}]")
        return cls(
            task_id=f.opt_int("task_id"),
            annotation_id=f.opt_int("annotation_id"),
            message=f.str_("message"),
        )


def _none_last(value: Any) -> tuple[bool, Any]:
    # Sort keys with optional ids: None compares with nothing, so it goes after every id.
    return (value is None, 0 if value is None else value)


def _correction_order(c: Correction) -> tuple:
    ids = (_none_last(c.task_id), _none_last(c.annotation_id))
    return (c.instance_id, _parse_time(c.completed_at), *ids, c.keypoints, c.completed_at)


def _skip_order(s: Skip) -> tuple:
    return (s.instance_id, _parse_time(s.at), _none_last(s.task_id), _none_last(s.annotation_id), s.reason, s.at)


def _problem_order(p: Problem) -> tuple:
    return (_none_last(p.task_id), _none_last(p.annotation_id), p.message)


# ------------------------------------------------------------------------------------------------------------ store


def _store_files(store_dir: Path) -> list[Path]:
    """The store's files in name (= time) order. Hidden files are temporary files of a write in progress."""
    if not store_dir.is_dir():
        return []
    files = sorted(p for p in store_dir.iterdir() if p.suffix == ".json" and not p.name.startswith(".") and p.is_file())
    for p in files:
        if not _STORE_NAME.match(p.name):
            # Read anyway: a hand-placed file is still human work; its name only decides its place in store order.
            log.warning("%s: name is not <yyyymmddTHHMMSSZ>-<12 hex>.json; read in name order", p)
    return files


def read_store_file(path: Path) -> tuple[list[Correction], list[Skip], list[Problem]]:
    """One store file's records, in file order; anything unreadable raises ValueError naming the file."""
    file = str(path)
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: corrupt corrections file: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != STORE_FORMAT:
        raise ValueError(f"{file}: field 'format': expected {STORE_FORMAT!r}, got {doc.get('format')!r:.60}")
    for name in ("corrections", "skipped", "problems"):
        if name not in doc:
            raise ValueError(f"{file}: field '{name}': missing")
        if not isinstance(doc[name], list):
            raise ValueError(f"{file}: field '{name}': expected a list, got {type(doc[name]).__name__}")
    return (
        [Correction.from_json(d, file, i) for i, d in enumerate(doc["corrections"])],
        [Skip.from_json(d, file, i) for i, d in enumerate(doc["skipped"])],
        [Problem.from_json(d, file, i) for i, d in enumerate(doc["problems"])],
    )


def read_store(store_dir: Path) -> tuple[list[Correction], list[Skip]]:
    """Every correction and skip in the store: files in name (timestamp) order, records in file order.

    A missing directory is an empty store (round 1). A file that cannot be read raises ValueError naming it.
    """
    corrections: list[Correction] = []
    skips: list[Skip] = []
    for path in _store_files(Path(store_dir)):
        c, s, _ = read_store_file(path)
        corrections += c
        skips += s
    return corrections, skips


def _new_only(records: Iterable[Any], seen: set[tuple]) -> list[Any]:
    """Records whose key is not in ``seen``, first of each key only (``seen`` grows)."""
    out = []
    for r in records:
        k = r.key()
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def write_pull(
    store_dir: Path,
    corrections: Iterable[Correction],
    skips: Iterable[Skip],
    problems: Iterable[Problem],
    source: str,
    now: datetime | None = None,
) -> Path | None:
    """Add one pull to the store; returns the new file, or None when no correction and no skip is new.

    Records already in the store (by key, see the module doc; every existing file counts) and repeats within this pull
    are dropped. ``problems`` never make a file on their own; they are logged, and written with the pull's new records
    when there are some. ``source`` is ``"labelstudio"`` or ``"inbox:<file name>"``; ``now`` (default: the current
    time) names the file and fills ``created``. Records are sorted (by instance, then time), so equal input gives
    equal bytes. Never touches an existing file: a clash with an existing name raises FileExistsError.
    """
    store_dir = Path(store_dir)
    problems = sorted(problems, key=_problem_order)
    for p in problems:
        log.warning("pull %s: task %s annotation %s: %s", source, p.task_id, p.annotation_id, p.message)
    old_corrections, old_skips = read_store(store_dir)
    new_c = _new_only(sorted(corrections, key=_correction_order), {c.key() for c in old_corrections})
    new_s = _new_only(sorted(skips, key=_skip_order), {s.key() for s in old_skips})
    if not new_c and not new_s:
        log.info("pull %s: nothing new (%d problem(s) not stored)", source, len(problems))
        return None

    now = datetime.now(UTC) if now is None else now
    now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)  # naive: taken as UTC
    doc = {
        "format": STORE_FORMAT,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "corrections": [c.to_json() for c in new_c],
        "skipped": [s.to_json() for s in new_s],
        "problems": [p.to_json() for p in problems],
    }
    data = _dumps_store(doc).encode("utf-8")
    path = store_dir / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{hashlib.sha256(data).hexdigest()[:12]}.json"
    _write_new(path, data)
    log.info("pull %s: %d correction(s), %d skip(s) -> %s", source, len(new_c), len(new_s), path)
    return path


def _dumps_store(doc: dict) -> str:
    """One record per line: files stay readable and diffable, and a corrupt line points at one record."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    lines = ["{"]
    items = list(doc.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {dump(key)}: [")
            lines += [f"    {dump(v)}{',' if i < len(value) - 1 else ''}" for i, v in enumerate(value)]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically, never replacing an existing file.

    Temp file + ``os.link``: the link appears complete or not at all, and unlike ``os.replace`` it fails when the
    name exists, even if another writer creates it between our check and the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path}: a corrections file with this name exists already; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path}: created by another writer meanwhile; refusing to overwrite it") from None
        except OSError:
            # A file system without hard links: fall back to the checked rename (only a concurrent writer of the
            # same second and content could slip in between, and it would write the same bytes).
            if path.exists():
                raise FileExistsError(f"{path}: exists already; refusing to overwrite it") from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # makes the new name durable; not possible on every file system
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ------------------------------------------------------------------------------------------------------------ merge


def _num_labeled(keypoints: Sequence[float]) -> int:
    return sum(1 for v in keypoints[2::3] if v > 0)


def merge(seed: dict, pool: dict, corrections: list[Correction], skips: list[Skip]) -> tuple[dict, dict]:
    """Seed labels + the store's records -> (train COCO dict, report dict). Pure and deterministic.

    ``seed``: COCO dict of the seed labels (labeled.json); ``pool``: COCO dict of the unlabeled instances (pool.json,
    zero keypoints); ``corrections`` / ``skips`` in store order (``read_store``). Rules (DESIGN.md §3):

    * a correction of a seed instance replaces its label; of a pool instance, adds it (box and keypoints from the
      correction; image, category, ``area`` and other fields from the pool annotation);
    * several corrections of one instance: the latest ``completed_at`` wins, ties go to the later in store order; the
      instance is listed under ``conflict_instance_ids``;
    * a ``no_person`` skip removes the instance (seed label included) unless a correction completed after it exists;
      other skips are only counted;
    * an instance id in neither file (``unknown_instances``) and a correction that does not fit its instance (other
      image, wrong number of keypoints: ``invalid_corrections``) are reported and left out, not raised: the store is
      append-only, so an exception here would block every later round.

    Output annotations carry ``source`` ("seed" / "human"); human ones also ``correction_id``
    ("<task_id>:<annotation_id>") and ``model_version``. ``num_keypoints`` is recounted from the flags. Images are
    those referenced, sorted by id; annotations sorted by id; categories and other top-level keys from ``seed``.
    The inputs are not modified; nested values merge does not change (e.g. segmentation) are shared with them.
    """
    seed_by_id = {a["id"]: a for a in seed["annotations"]}
    pool_by_id = {a["id"]: a for a in pool["annotations"]}
    images = {im["id"]: im for im in pool["images"]}
    images.update({im["id"]: im for im in seed["images"]})  # seed's record wins when both have the image
    num_kps = {c["id"]: len(c["keypoints"]) for c in seed["categories"] if c.get("keypoints")}

    unknown: set[int] = set()
    invalid = []
    # instance id -> (sort key, correction); the key makes "latest, then later in store order" one comparison.
    winner: dict[int, tuple[tuple, Correction]] = {}
    count: Counter[int] = Counter()
    for order, c in enumerate(corrections):
        base = seed_by_id.get(c.instance_id, pool_by_id.get(c.instance_id))
        if base is None:
            unknown.add(c.instance_id)
            continue
        # Checked before the vote, so a broken record never shadows an earlier good one.
        problem = _misfit(c, base, num_kps)
        if problem:
            invalid.append({"instance_id": c.instance_id, "correction_id": c.correction_id, "message": problem})
            log.warning("merge: correction %s of instance %d left out: %s", c.correction_id, c.instance_id, problem)
            continue
        count[c.instance_id] += 1
        key = (_parse_time(c.completed_at), order)
        if c.instance_id not in winner or key > winner[c.instance_id][0]:
            winner[c.instance_id] = (key, c)

    no_person: dict[int, datetime] = {}  # instance id -> latest no_person time
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for s in skips:
        skipped[s.reason] += 1
        if s.instance_id not in seed_by_id and s.instance_id not in pool_by_id:
            unknown.add(s.instance_id)
        elif s.reason == "no_person":
            t = _parse_time(s.at)
            no_person[s.instance_id] = max(t, no_person.get(s.instance_id, t))

    removed: set[int] = set()
    for iid, t in no_person.items():
        # Only a correction completed after the "no person" verdict overrides it; a tie keeps the person out.
        if iid in winner and winner[iid][0][0] > t:
            continue
        if iid in seed_by_id or iid in winner:  # it would have been in the training set
            removed.add(iid)
        winner.pop(iid, None)

    out: dict[int, dict] = {}
    for iid, ann in seed_by_id.items():
        if iid not in removed:
            kps = list(ann["keypoints"])
            out[iid] = {**ann, "keypoints": kps, "num_keypoints": _num_labeled(kps), "source": "seed"}
    overridden = 0
    for iid, (_, c) in winner.items():
        base = seed_by_id.get(iid, pool_by_id.get(iid))
        overridden += iid in seed_by_id
        out[iid] = {
            **base,
            "bbox": list(c.bbox),
            "area": base.get("area", c.bbox[2] * c.bbox[3]),
            "keypoints": list(c.keypoints),
            "num_keypoints": _num_labeled(c.keypoints),
            "source": "human",
            "correction_id": c.correction_id,
            "model_version": c.model_version,
        }
    if unknown:
        log.warning("merge: %d instance id(s) in neither seed nor pool, left out: %s", len(unknown), sorted(unknown))

    annotations = [out[i] for i in sorted(out)]
    used = sorted({a["image_id"] for a in annotations})
    content = {
        "images": [dict(images[i]) for i in used],
        "annotations": annotations,
        "categories": [dict(c) for c in seed["categories"]],
    }
    train = {k: content.get(k, v) for k, v in seed.items()}
    train.update({k: v for k, v in content.items() if k not in train})
    conflicts = sorted(i for i, n in count.items() if n > 1)
    report = {
        "seed": len(seed_by_id),
        "corrections": len(corrections),
        "human_instances": sum(1 for a in annotations if a["source"] == "human"),
        "overridden_seed": overridden,
        "conflicts": len(conflicts),
        "conflict_instance_ids": conflicts,
        "removed_no_person": len(removed),
        "removed_no_person_ids": sorted(removed),
        "skipped": skipped,
        "unknown_instances": sorted(unknown),
        "invalid_corrections": sorted(invalid, key=lambda d: d["instance_id"]),  # stable: store order within one
        "labeled_total": len(annotations),
    }
    return train, report


def _misfit(c: Correction, base: dict, num_kps: dict[int, int]) -> str | None:
    """Why a correction cannot label the annotation it names (None when it can)."""
    if c.image_id != base["image_id"]:
        return f"image_id {c.image_id} but instance {c.instance_id} is on image {base['image_id']}"
    k = num_kps.get(base.get("category_id"))
    if k is None:
        return f"category {base.get('category_id')!r} has no keypoints in the seed's categories"
    if len(c.keypoints) != 3 * k:
        return f"{len(c.keypoints)} keypoint values, expected 3*{k}={3 * k}"
    if c.bbox[2] <= 0 or c.bbox[3] <= 0:
        return f"box width and height must be > 0, got {list(c.bbox)}"
    return None
