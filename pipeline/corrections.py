"""The append-only store of human corrections (``data/corrections/``): its records and files (docs/DESIGN.md §3).
How the records become training labels is ``pipeline.merge``.

Store. ``pull`` adds one file per pull that brings something new, named ``<UTC yyyymmddTHHMMSSZ>-<hash>.json``; the
format is docs/contracts/labelstudio.md (``poseloop-corrections/2``; files of ``/1`` are read as they are). Files are
never rewritten or deleted: they are the only copy of the annotators' work once Label Studio is gone, so every reader
raises on a file it cannot read rather than skip it. The hash is the first 12 hex digits of the sha256 of the file's
bytes, so a file can be checked against its name (``sha256sum``). A round is one pull that brought something new
(``round_number``).

Identity of a record (what makes a pulled record "already stored"): where it came from (``origin``: the Label Studio
server and project, or the inbox file), its task and annotation ids, the instance, the version (``completed_at``: an
annotation edited after it was pulled has a later ``updated_at`` and comes in as a new correction, and the later one
wins in merge) and its content. A fresh Label Studio restarts task and annotation ids at 1: its records differ in
``origin`` and content, so they are stored, never dropped as already seen. Where a record's server is unknown (a
``/1`` record has no origin; an inbox file is an export of some server) it matches a record of any origin with the same
ids, time and content: upgrading does not pull everything twice, and a server's export dropped into the inbox adds
nothing already pulled from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline.checks import is_finite_number, is_int
from pipeline.files import JsonFileError, atomic_write, read_json

log = logging.getLogger(__name__)

STORE_FORMAT = "poseloop-corrections/2"
READABLE_FORMATS = ("poseloop-corrections/1", STORE_FORMAT)
SkipReason = Literal["skipped", "cancelled", "no_person"]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)
_STORE_NAME = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{12}\.json$")


# ------------------------------------------------------------------------------------------------ field validation


def _check_texts(record: Any, names: tuple[str, ...]) -> None:
    """Optional text fields must be text: a record written with anything else could never be read back."""
    for name in names:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"{type(record).__name__} of instance {record.instance_id}: {name} must be text, got "
                f"{type(value).__name__} {value!r:.40}"
            )


def origin_identity(origin: str | None) -> str | None:
    """The part of an origin that identifies the source in a record's key: for Label Studio the project and its
    creation time, not the URL (localhost and 127.0.0.1, or a new port, are the same server); an inbox file as it is."""
    if origin is not None and origin.startswith("labelstudio:") and "/projects/" in origin:
        return "labelstudio:" + origin.rsplit("/projects/", 1)[1]
    return origin


def parse_time(text: str) -> datetime:
    """ISO-8601 -> an aware datetime; a time without a zone is taken as UTC (Label Studio writes UTC)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _check_time(text: str, what: str) -> None:
    try:
        parse_time(text)
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
        if not is_int(value):
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

    def absent_or_str(self, name: str) -> str | None:
        """A field that ``/1`` files do not have: absent or null is None."""
        return None if self.d.get(name) is None else self.str_(name)

    def absent_or_count(self, name: str) -> int | None:
        if self.d.get(name) is None:
            return None
        value = self.int_(name)
        if value < 0:
            raise self.fail(name, f"expected a count >= 0, got {value}")
        return value

    def absent_or_bool(self, name: str) -> bool:
        value = self.d.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {value!r:.40}")
        return value

    def absent_or_bbox(self, name: str) -> tuple[float, float, float, float] | None:
        if self.d.get(name) is None:
            return None
        values = self.numbers(name)
        if len(values) != 4:
            raise self.fail(name, f"expected [x, y, width, height], got {len(values)} numbers")
        return _bbox(values)

    def time(self, name: str) -> str:
        value = self.str_(name)
        try:
            parse_time(value)
        except ValueError as exc:
            raise self.fail(name, f"not an ISO-8601 time: {value!r:.60}") from exc
        return value

    def numbers(self, name: str) -> list[float]:
        value = self.get(name)
        if not isinstance(value, list) or not all(is_finite_number(v) for v in value):
            raise self.fail(name, f"expected a list of finite numbers, got {value!r:.60}")
        return value


def _bbox(values: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    return (x, y, w, h)


def _check_bbox(values: Any, what: str) -> tuple[float, float, float, float]:
    if len(values) != 4 or not all(is_finite_number(v) for v in values):
        raise ValueError(f"{what}: expected 4 finite numbers (x, y, w, h), got {list(values)!r:.80}")
    return _bbox(values)


# Ids of people the instance finder found and of people annotators added: functions of their identity (image file
# and box), so they do not move when the pool grows or is drawn again; above every source's ids and below 2^53, so
# JavaScript (Label Studio's frontend) and JSON readers keep them exact. 40 bits of a SHA-256 each.
FOUND_ID_BASE = 2 * 10**15
ADDED_ID_BASE = 4 * 10**15
_ID_SPAN = 16**10


def _identity_id(base: int, image_file: str, bbox: Sequence[float]) -> int:
    key = f"{image_file}|" + ",".join(f"{float(v):.1f}" for v in bbox)
    return base + int(hashlib.sha256(key.encode()).hexdigest()[:10], 16)


def added_instance_id(image_file: str, bbox: Sequence[float]) -> int:
    """The id of a person an annotator added: a function of its identity (image file, box to 0.1 px)."""
    return _identity_id(ADDED_ID_BASE, image_file, bbox)


def found_instance_id(image_file: str, bbox: Sequence[float]) -> int:
    """The id of a person the instance finder found: a function of its identity (image file, box to 0.1 px)."""
    return _identity_id(FOUND_ID_BASE, image_file, bbox)


def is_found_id(instance_id: int) -> bool:
    return FOUND_ID_BASE <= instance_id < FOUND_ID_BASE + _ID_SPAN


def covers_image(box: Sequence[float] | None, width: float, height: float) -> bool:
    """Whether ``box`` (x, y, w, h) is the whole image: the box of an image's stand-in when the finder found nobody
    on it (pipeline/finding.py), as a task or a record carries it."""
    return box is not None and box_iou(box, (0.0, 0.0, width, height)) > 0.99


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x, y, w, h) boxes; 0 when either is empty."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _keypoints(values: Sequence[float]) -> tuple[float, ...]:
    """Canonical keypoints: x, y as float, the COCO flag as int (so equal data gives equal bytes and equal keys)."""
    return tuple(int(v) if i % 3 == 2 else float(v) for i, v in enumerate(values))


def _keypoint_problem(values: Sequence[float]) -> str | None:
    """Why a flat x, y, v list is not COCO keypoints (None when it is)."""
    if not all(is_finite_number(v) for v in values):
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
    1 labeled but occluded, 0 not labeled). ``completed_at`` is an ISO-8601 UTC time (the annotation's
    ``updated_at``: the version pulled). ``task_id`` / ``annotation_id`` are Label Studio's, None for inbox files
    that have none.

    Provenance (None in records of ``/1`` files): ``origin`` is where the record came from
    (``labelstudio:<url>/projects/<id>@<project created_at>`` or ``inbox:<file name>``); ``image_file`` and
    ``instance_bbox`` identify the person independently of ``instance_id`` (module doc): the image's ``file_name``
    in the prepared files and the person's box as exported, (x, y, w, h) pixels.

    Effort (None when the prediction the annotator started from is unknown): keypoints the annotator moved, added
    and deleted relative to that pre-annotation (``annotations.keypoint_effort``). Not part of the identity.

    ``added``: a person nobody had boxed, added by the annotator on the task's image (a "missed person" box). Its
    identity is ``image_file`` + its own box (``instance_bbox``); ``instance_id`` is ``added_instance_id`` of them, a
    number no prepared instance has; merge adds it as a new person unless it is one already there (module
    pipeline/merge.py). Written to the store only when true, so older records keep their bytes.
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
    origin: str | None = None
    image_file: str | None = None
    instance_bbox: tuple[float, float, float, float] | None = None
    moved_keypoints: int | None = None
    added_keypoints: int | None = None
    deleted_keypoints: int | None = None
    added: bool = False

    def __post_init__(self) -> None:
        # Records built in code (pull) get the checks from_json gives file records, and the canonical number types,
        # so equal data has equal keys and bytes whatever produced it (numpy scalars included).
        problem = _keypoint_problem(self.keypoints) or (None if len(self.bbox) == 4 else "bbox needs 4 numbers")
        if problem or not all(is_finite_number(v) for v in self.bbox):
            raise ValueError(f"correction of instance {self.instance_id}: {problem or 'bbox not finite numbers'}")
        _check_time(self.completed_at, f"correction of instance {self.instance_id}: completed_at")
        _check_texts(self, ("annotator", "model_version", "origin", "image_file"))
        _set_ids(
            self,
            ("instance_id", "image_id"),
            ("task_id", "annotation_id", "moved_keypoints", "added_keypoints", "deleted_keypoints"),
        )
        object.__setattr__(self, "bbox", _bbox(self.bbox))
        object.__setattr__(self, "keypoints", _keypoints(self.keypoints))
        if self.instance_bbox is not None:
            box = _check_bbox(self.instance_bbox, f"correction of instance {self.instance_id}: instance_bbox")
            object.__setattr__(self, "instance_bbox", box)

    @property
    def correction_id(self) -> str:
        """``"<task_id>:<annotation_id>"`` as written to train.json (``"None:None"`` for an inbox record)."""
        return f"{self.task_id}:{self.annotation_id}"

    def key(self) -> tuple:
        """Identity in the store (see the module doc): origin, ids, instance, version and content."""
        ids = (self.task_id, self.annotation_id, self.instance_id, self.completed_at)
        return ("correction", origin_identity(self.origin), *ids, self.bbox, self.keypoints)

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
            "origin": self.origin,
            "image_file": self.image_file,
            "instance_bbox": None if self.instance_bbox is None else list(self.instance_bbox),
            "moved_keypoints": self.moved_keypoints,
            "added_keypoints": self.added_keypoints,
            "deleted_keypoints": self.deleted_keypoints,
            **({"added": True} if self.added else {}),
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
            origin=f.absent_or_str("origin"),
            image_file=f.absent_or_str("image_file"),
            instance_bbox=f.absent_or_bbox("instance_bbox"),
            moved_keypoints=f.absent_or_count("moved_keypoints"),
            added_keypoints=f.absent_or_count("added_keypoints"),
            deleted_keypoints=f.absent_or_count("deleted_keypoints"),
            added=f.absent_or_bool("added"),
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
    origin: str | None = None
    image_file: str | None = None
    instance_bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"skip of instance {self.instance_id}: reason {self.reason!r} not in {list(SKIP_REASONS)}")
        _check_time(self.at, f"skip of instance {self.instance_id}: at")
        _check_texts(self, ("annotator", "origin", "image_file"))
        _set_ids(self, ("instance_id",), ("task_id", "annotation_id"))
        if self.instance_bbox is not None:
            box = _check_bbox(self.instance_bbox, f"skip of instance {self.instance_id}: instance_bbox")
            object.__setattr__(self, "instance_bbox", box)

    def key(self) -> tuple:
        # ``at`` (the version): a task skipped, corrected, then skipped again keeps its last verdict
        ids = (self.task_id, self.annotation_id, self.instance_id, self.reason, self.at)
        return ("skip", origin_identity(self.origin), *ids)

    def to_json(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "task_id": self.task_id,
            "annotation_id": self.annotation_id,
            "annotator": self.annotator,
            "at": self.at,
            "reason": self.reason,
            "origin": self.origin,
            "image_file": self.image_file,
            "instance_bbox": None if self.instance_bbox is None else list(self.instance_bbox),
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
            origin=f.absent_or_str("origin"),
            image_file=f.absent_or_str("image_file"),
            instance_bbox=f.absent_or_bbox("instance_bbox"),
        )


@dataclass(frozen=True)
class AnnotationProblem:
    """An annotation pull could not turn into a correction (unknown label, point outside the image, ...)."""

    task_id: int | None
    annotation_id: int | None
    message: str

    def to_json(self) -> dict:
        return {"task_id": self.task_id, "annotation_id": self.annotation_id, "message": self.message}

    @classmethod
    def from_json(cls, d: Any, file: str = "<corrections>", index: int = 0) -> AnnotationProblem:
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
    return (c.instance_id, parse_time(c.completed_at), *ids, c.keypoints, c.completed_at)


def _skip_order(s: Skip) -> tuple:
    return (s.instance_id, parse_time(s.at), _none_last(s.task_id), _none_last(s.annotation_id), s.reason, s.at)


def _problem_order(p: AnnotationProblem) -> tuple:
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


def read_store_file(path: Path) -> tuple[list[Correction], list[Skip], list[AnnotationProblem]]:
    """One store file's records, in file order; anything unreadable raises ValueError naming the file."""
    file = str(path)
    try:
        doc = read_json(path)
    except JsonFileError as exc:
        raise ValueError(f"corrupt corrections file: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") not in READABLE_FORMATS:
        expected = list(READABLE_FORMATS)
        raise ValueError(f"{file}: field 'format': expected one of {expected}, got {doc.get('format')!r:.60}")
    for name in ("corrections", "skipped", "problems"):
        if name not in doc:
            raise ValueError(f"{file}: field '{name}': missing")
        if not isinstance(doc[name], list):
            raise ValueError(f"{file}: field '{name}': expected a list, got {type(doc[name]).__name__}")
    return (
        [Correction.from_json(d, file, i) for i, d in enumerate(doc["corrections"])],
        [Skip.from_json(d, file, i) for i, d in enumerate(doc["skipped"])],
        [AnnotationProblem.from_json(d, file, i) for i, d in enumerate(doc["problems"])],
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


def round_number(store_dir: Path) -> int:
    """The round a model trained on the store's records belongs to: 1 + the pulls that brought something new.

    A pull is one timestamp of the store's file names: this version writes one file per pull, older ones wrote one
    per source of a pull within the same second (so one pull of four inbox files is one round, not four).
    """
    pulls = set()
    for p in _store_files(Path(store_dir)):
        match = _STORE_NAME.match(p.name)
        pulls.add(match.group(1) if match else p.name)
    return 1 + len(pulls)


def _origin_unknown(record: Correction | Skip) -> bool:
    """A record whose server we do not know: from a ``/1`` file (no origin) or from an inbox file (a Label Studio
    export of some server)."""
    return record.origin is None or record.origin.startswith("inbox:")


def _new_only(records: Iterable[Any], stored: Iterable[Any]) -> list[Any]:
    """``records`` not in ``stored`` (by key), first of each key only.

    Where one side's server is unknown (``_origin_unknown``) the origin is left out of the comparison: ids, version and
    content must still all match. So the first pull after an upgrade does not store every old annotation again, and a
    server's JSON export dropped into the inbox adds nothing that was pulled from that server (or the reverse).
    """

    def anonymous(key: tuple) -> tuple:
        return (key[0], None, *key[2:])

    stored = list(stored)
    exact = {r.key() for r in stored}
    any_origin = {anonymous(r.key()) for r in stored}
    unknown_origin = {anonymous(r.key()) for r in stored if _origin_unknown(r)}
    out = []
    for r in records:
        k = r.key()
        a = anonymous(k)
        if k in exact or a in unknown_origin or (_origin_unknown(r) and a in any_origin):
            continue
        exact.add(k)
        any_origin.add(a)
        if _origin_unknown(r):
            unknown_origin.add(a)
        out.append(r)
    return out


def _log_new_versions(new: list[Correction], stored: list[Correction], source: str) -> None:
    """Log every new correction that is a later version of a stored annotation (edited in Label Studio after it was
    pulled). The later version is stored as a correction of its own, and merge takes the later. A stored record whose
    server is unknown (``_origin_unknown``) matches its ids from any server, as in ``_new_only``."""
    known = {(origin_identity(c.origin), c.task_id, c.annotation_id) for c in stored if c.task_id is not None}
    anywhere = {(c.task_id, c.annotation_id) for c in stored if c.task_id is not None and _origin_unknown(c)}
    for c in new:
        ids = (c.task_id, c.annotation_id)
        if c.task_id is not None and ((origin_identity(c.origin), *ids) in known or ids in anywhere):
            log.warning(
                "pull %s: task %s annotation %s (instance %d) was edited after it was pulled; the version of "
                "%s is stored as a new correction and the later one wins",
                source,
                c.task_id,
                c.annotation_id,
                c.instance_id,
                c.completed_at,
            )


STORE_LOCK_TIMEOUT_S = 600.0


@contextlib.contextmanager
def store_lock(store_dir: Path, timeout_s: float = STORE_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the store's write lock for the block: one pull at a time reads the store, decides what is new and writes.

    Two pulls at once would each find the other's records missing and store them twice, under two rounds. The lock
    is an ``flock`` on a file beside the store (``.<name>.lock``, outside the folder DVC caches), so a pull killed
    with SIGKILL releases it with its process. A second pull waits up to ``timeout_s``, then raises naming the file.
    """
    import fcntl

    real = Path(store_dir).resolve()  # beside the real folder: two clones sharing one store share the lock too
    lock_path = real.parent / f".{real.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a+b") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.warning("%s: another pull is writing the corrections store; waiting for it", lock_path)
                    waited = True
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{lock_path}: another pull has held the corrections store for over {timeout_s:.0f} s; "
                        "wait for it to finish (or end it) and pull again"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_pull(
    store_dir: Path,
    corrections: Iterable[Correction],
    skips: Iterable[Skip],
    problems: Iterable[AnnotationProblem],
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
    with store_lock(store_dir):
        return _write_pull_locked(store_dir, corrections, skips, problems, source, now)


def _write_pull_locked(
    store_dir: Path,
    corrections: Iterable[Correction],
    skips: Iterable[Skip],
    problems: list[AnnotationProblem],
    source: str,
    now: datetime | None,
) -> Path | None:
    _remove_stale_temp_files(store_dir)
    old_corrections, old_skips = read_store(store_dir)
    new_c = _new_only(sorted(corrections, key=_correction_order), old_corrections)
    new_s = _new_only(sorted(skips, key=_skip_order), old_skips)
    _log_new_versions(new_c, old_corrections, source)
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


def _temp_dir(store_dir: Path) -> Path:
    """Where a store file is written before it is linked into the store: beside the store, not in it, so a write
    killed half-way leaves nothing inside the folder DVC caches (data/.corrections.tmp/, ignored by git). Beside
    the store's real folder when it is a symlink (a store kept on another disk), so the rename stays on one file
    system; only a store that is itself a mount point leaves ``atomic_write`` no choice but a hidden temp file inside
    it, which the next pull removes."""
    real = store_dir.resolve()
    return real.parent / f".{real.name}.tmp"


def _remove_stale_temp_files(store_dir: Path) -> None:
    """Delete the temp files of writes that were killed (SIGKILL, power cut), in the temp folder and, from older
    versions or a store that is a mount point, hidden ``.*.tmp`` files inside the store. Called with the store lock
    held, so no write is in progress: a temp file is never a record (when its write finished, its content is in
    the named file)."""
    stale = list(store_dir.glob(".*.tmp")) if store_dir.is_dir() else []
    temp_dir = _temp_dir(store_dir)
    if temp_dir.is_dir():
        stale += [p for p in temp_dir.iterdir() if p.is_file() and p.name.endswith(".tmp")]
    for p in stale:
        log.warning("%s: temp file of an interrupted write; removed (it is not a record)", p)
        p.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically and durably, never replacing an existing file (human work); the temp
    file lives in ``_temp_dir``, outside the folder DVC caches."""
    try:
        atomic_write(path, data, create_only=True, durable=True, temp_dir=_temp_dir(path.parent))
    except FileExistsError as exc:
        raise FileExistsError(f"{exc} (a corrections file of that name is stored human work)") from None


def completed_images(corrections: list[Correction], skips: list[Skip], pool: dict) -> dict:
    """The pool images annotators completed, as COCO (images, annotations with boxes and keypoints): what the
    instance finder may learn from besides the seed images (pipeline/finding.py), since every person on them is
    boxed.

    An image is complete when its whole-image stand-in (an image where the finder found nobody: the task's box is
    the whole image) was answered: the annotator fitted the box to one person and drew any other as a missed person,
    drew everyone as missed people (the whole-image box deleted), or said there is nobody (an image of background
    only). The latest answer of an image counts, with only the people of that version of the annotation (a missed
    person deleted in a later edit is gone). Left out: a skipped task; an answer whose person has no box of its own
    (keypoints placed, the whole-image box kept); an image on which another annotation labeled someone too (two
    answers that may disagree: not knowingly complete). ``pool``: the prepared pool.json (its images' sizes)."""
    size_of = {im["file_name"]: (im["width"], im["height"]) for im in pool["images"]}

    def whole(box: Sequence[float] | None, file_name: str | None) -> bool:
        return file_name in size_of and covers_image(box, *size_of[file_name])

    def key(record: Correction | Skip) -> tuple:
        return record.origin, record.task_id, record.annotation_id

    def time_of(record: Correction | Skip) -> datetime:
        return parse_time(record.completed_at if isinstance(record, Correction) else record.at)

    latest: dict[str, Correction | Skip] = {}  # image file -> its latest answer to a stand-in task
    for record in [*corrections, *skips]:
        if getattr(record, "added", False) or not whole(record.instance_bbox, record.image_file):
            continue
        if isinstance(record, Skip) and record.reason != "no_person":
            continue
        if record.image_file not in latest or time_of(record) >= time_of(latest[record.image_file]):
            latest[record.image_file] = record
    added: dict[tuple, list[Correction]] = {}  # (annotation key, time) -> the people it added
    labeled_by: dict[str, set[tuple]] = {}  # image file -> the annotations that labeled someone on it
    for c in corrections:
        if c.added:
            added.setdefault((key(c), time_of(c)), []).append(c)
        if c.image_file is not None:
            labeled_by.setdefault(c.image_file, set()).add(key(c))
    ids = {im["file_name"]: im["id"] for im in pool["images"]}
    images, annotations = [], []
    for file_name, answer in sorted(latest.items()):
        if labeled_by.get(file_name, set()) - {key(answer)}:
            continue  # someone else labeled a person on it too
        people = [c for c in added.get((key(answer), time_of(answer)), []) if c.image_file == file_name]
        if isinstance(answer, Correction):
            if whole(answer.bbox, file_name):
                continue  # keypoints placed without fitting the box: the person's box is unknown
            people = [answer, *people]
        width, height = size_of[file_name]
        images.append({"id": ids[file_name], "file_name": file_name, "width": width, "height": height})
        for person in people:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ids[file_name],
                    "category_id": pool["categories"][0]["id"],
                    "bbox": list(person.bbox),
                    "area": person.bbox[2] * person.bbox[3],
                    "iscrowd": 0,
                    "keypoints": list(person.keypoints),
                    "num_keypoints": sum(1 for v in person.keypoints[2::3] if v > 0),
                }
            )
    return {"images": images, "annotations": annotations, "categories": pool["categories"]}
