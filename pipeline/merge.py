"""The merge rules: seed labels + the corrections store -> train.json (docs/DESIGN.md §3). The records and their
store are ``pipeline.corrections``.

Which person a record labels. ``instance_id`` is our numbering, which changes when the data set is split again
(``data.seed``) or grows (a DeepLabCut project that gains frames renumbers every instance). Each record therefore
also carries what identifies the person independently of it: ``image_file`` (the image's ``file_name`` in the
prepared files: for DeepLabCut the frame path) and ``instance_bbox`` (the person's box as it was exported). Merge
applies a record only to the instance they identify: the one with its id when they match, else the instance on the
same image whose box matches (re-mapped, reported), else nobody (refused, reported by name).

Merge. ``merge`` is a pure function of the seed labels, the pool and the store's records: the same inputs give the same
dict, so re-running the stage gives the same bytes and DVC sees no change. Times are compared as instants (parsed
ISO-8601), not as strings: ``...:00.5Z`` sorts before ``...:00Z`` as text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pipeline.corrections import (
    SKIP_REASONS,
    Correction,
    Skip,
    box_iou,
    covers_image,
    is_found_id,
    origin_identity,
    parse_time,
    read_store,
    round_number,
)
from pipeline.data.coco import read_coco, write_coco
from pipeline.data.pool_predictions import is_stand_in

log = logging.getLogger(__name__)

# Same-person tests of merge: IoU of the record's exported box with the instance's box. The exported box is the
# instance's own box, so the same person matches at ~1; 0.9 leaves room for rounding and a re-saved source file.
# A record of a /1 file knows only the box the annotator submitted, which they may have redrawn: 0.5 there.
SAME_BOX_IOU = 0.9
LEGACY_BOX_IOU = 0.5
# A person an annotator added is someone already there when its box overlaps theirs this much (the same person added
# by another annotator, or found by the finder since): then the record labels that person instead of a new one. High
# enough that a missed person half hidden behind a neighbour stays a person of their own.
ADDED_SAME_PERSON_IOU = 0.7
# A correction of a found person whose box a retrained finder no longer gives (its id is gone) labels the re-found
# person whose box overlaps the one the annotator corrected this much, else it is a person of its own.
REFOUND_SAME_PERSON_IOU = 0.5


def _with_added_people(
    seed: dict, pool: dict, corrections: list[Correction], skips: list[Skip], images: dict[int, dict]
) -> tuple[dict, list[Correction], int]:
    """Each person an annotator added (``Correction.added``) who is nobody already on the image becomes a pool
    instance of its own (id ``instance_id``, ``added: true``); one who is (IoU >= ``ADDED_SAME_PERSON_IOU``: found
    by the finder since, or added by another annotator first) has the record re-aimed at that person. In store
    order. The task's own person, when the same annotation says "no person" for it, is not a candidate (a wrong box
    deleted and the real person drawn over it). Returns (the pool with the new people, the corrections, how many
    people were added). A record whose image file is not in the data set is left as it is: merge reports it as
    mismatched."""
    present = {a["id"] for a in [*seed["annotations"], *pool["annotations"]]}

    def adds(c: Correction) -> bool:  # a person added, or a found person the finder no longer finds as it was
        return c.added or (is_found_id(c.instance_id) and c.instance_id not in present)

    if not any(adds(c) for c in corrections):
        return pool, corrections, 0
    # An annotation edited after a pull comes in again as a newer record: only its latest version adds people, so
    # a missed-person box the annotator deleted or moved adds nobody.
    latest: dict[tuple, datetime] = {}
    for key, t in [
        *(((c.origin, c.task_id, c.annotation_id), parse_time(c.completed_at)) for c in corrections),
        *(((s.origin, s.task_id, s.annotation_id), parse_time(s.at)) for s in skips),  # edited to "no person"
    ]:
        latest[key] = max(latest.get(key, t), t)
    id_of_file = {im.get("file_name"): i for i, im in images.items()}
    category = seed["categories"][0]["id"]
    on_file: dict[str, list[dict]] = {}
    for a in [*seed["annotations"], *pool["annotations"]]:
        on_file.setdefault(images.get(a["image_id"], {}).get("file_name"), []).append(a)
    denied = {(s.origin, s.task_id, s.annotation_id): s.instance_id for s in skips if s.reason == "no_person"}
    new: list[dict] = []
    out = []
    for c in corrections:
        image_id = id_of_file.get(c.image_file)
        if not adds(c) or image_id is None:
            out.append(c)
            continue
        if c.added and parse_time(c.completed_at) < latest[(c.origin, c.task_id, c.annotation_id)]:
            continue  # withdrawn or redrawn in a later version of its annotation
        not_a_person = denied.get((c.origin, c.task_id, c.annotation_id))
        candidates = [a for a in on_file.get(c.image_file, []) if a["id"] != not_a_person and not is_stand_in(a)]
        image = images[image_id]
        # a found person: where the finder had them; but on the stand-in of an image where it found nobody (the
        # whole image as the box), the person is where the annotator fitted the box
        stand_in = covers_image(c.instance_bbox, image["width"], image["height"])
        box = c.bbox if c.added or stand_in else (c.instance_bbox or c.bbox)
        there = max(candidates, key=lambda a: box_iou(box, a["bbox"]), default=None)
        threshold = ADDED_SAME_PERSON_IOU if c.added else REFOUND_SAME_PERSON_IOU
        if there is not None and box_iou(box, there["bbox"]) >= threshold:
            out.append(replace(c, instance_id=there["id"], image_id=image_id, instance_bbox=tuple(there["bbox"])))
            continue
        person = {
            "id": c.instance_id,
            "image_id": image_id,
            "category_id": category,
            "bbox": list(c.bbox),
            "area": c.bbox[2] * c.bbox[3],
            "iscrowd": 0,
            "keypoints": [0.0] * len(c.keypoints),
            "num_keypoints": 0,
            "added": True,
        }
        new.append(person)
        on_file.setdefault(c.image_file, []).append(person)
        out.append(replace(c, image_id=image_id))
    return {**pool, "annotations": [*pool["annotations"], *new]}, out, len(new)


def _num_labeled(keypoints: Sequence[float]) -> int:
    return sum(1 for v in keypoints[2::3] if v > 0)


class _People:
    """The instances of seed + pool, found by id or by what identifies a person independently of ids (module doc)."""

    def __init__(self, seed: dict, pool: dict, images: dict[int, dict]) -> None:
        self.by_id = {a["id"]: a for a in pool["annotations"]}
        self.by_id.update({a["id"]: a for a in seed["annotations"]})
        self.file_of = {i: im.get("file_name") for i, im in images.items()}
        self.on_file: dict[str, list[dict]] = {}
        for a in self.by_id.values():
            self.on_file.setdefault(self.file_of.get(a["image_id"]), []).append(a)

    def _matches(self, record: Correction | Skip, ann: dict, box: Sequence[float], threshold: float) -> bool:
        same_file = record.image_file is None or self.file_of.get(ann["image_id"]) == record.image_file
        return same_file and box_iou(box, ann["bbox"]) >= threshold

    def identify(self, record: Correction | Skip) -> tuple[dict | None, str | None]:
        """(the instance ``record`` labels, None), or (None, why none does). A record of a ``/1`` file (no
        ``image_file``, no ``instance_bbox``) is checked by the box the annotator submitted (skips: by id only)."""
        base = self.by_id.get(record.instance_id)
        legacy = record.image_file is None and record.instance_bbox is None
        if legacy:
            if base is None:
                return None, f"instance {record.instance_id} is in neither seed nor pool"
            if isinstance(record, Skip) or self._matches(record, base, record.bbox, LEGACY_BOX_IOU):
                return base, None
            return None, (
                f"instance {record.instance_id}'s box {base['bbox']} does not overlap the labeled box "
                f"{list(record.bbox)} (IoU < {LEGACY_BOX_IOU}): the data set changed since it was made"
            )
        box = record.instance_bbox if record.instance_bbox is not None else getattr(record, "bbox", None)
        # the annotator's own box (no exported box recorded) may be redrawn: the looser legacy threshold
        threshold = SAME_BOX_IOU if record.instance_bbox is not None else LEGACY_BOX_IOU
        if base is None and is_found_id(record.instance_id):
            # a found person a retrained finder gives a little elsewhere (so under another id): the verdict on the
            # box the annotator saw holds for whoever is found over it, as a correction's does (_with_added_people)
            threshold = REFOUND_SAME_PERSON_IOU
        if box is None:  # a skip with an image file but no box: the file is all there is to check
            if base is not None and self._matches(record, base, base["bbox"], 0.0):
                return base, None
            return None, f"instance {record.instance_id} is not on {record.image_file!r}"
        if base is not None and self._matches(record, base, box, threshold):
            return base, None
        candidates = self.on_file.get(record.image_file, []) if record.image_file is not None else []
        candidates = [a for a in candidates if not is_stand_in(a)]  # a whole image stands in for nobody in particular
        scored = sorted(((box_iou(box, a["bbox"]), a["id"]) for a in candidates), reverse=True)
        if scored and scored[0][0] >= threshold:
            return self.by_id[scored[0][1]], None
        now = (
            "not in this data set"
            if base is None
            else (f"now {self.file_of.get(base['image_id'])!r} box {[round(v, 1) for v in base['bbox']]}")
        )
        return None, (
            f"made for the person on {record.image_file!r} box {[round(v, 1) for v in box]}; instance "
            f"{record.instance_id} is {now}, and no person of this data set matches: not applied"
        )


def effort_summary(corrections: Iterable[Correction]) -> dict:
    """Annotator effort over the corrections whose pre-annotation is known, the latest version of each annotation:
    ``tasks`` counted and the keypoints moved / added / deleted per task (means; None when no task has one)."""
    # one per annotation, its latest version: an edit is measured against the same pre-annotation again
    latest: dict[tuple, Correction] = {}
    for c in corrections:
        if c.moved_keypoints is None:
            continue
        key = (origin_identity(c.origin), c.task_id, c.annotation_id) if c.task_id is not None else c.key()
        if key not in latest or parse_time(c.completed_at) >= parse_time(latest[key].completed_at):
            latest[key] = c
    known = list(latest.values())
    n = len(known)

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / n, 3) if n else None

    return {
        "tasks": n,
        "moved_per_task": mean([c.moved_keypoints or 0 for c in known]),
        "added_per_task": mean([c.added_keypoints or 0 for c in known]),
        "deleted_per_task": mean([c.deleted_keypoints or 0 for c in known]),
        "moved_total": sum(c.moved_keypoints or 0 for c in known),
    }


Locate = Callable[[Correction | Skip, str], dict | None]


def _vote(
    corrections: list[Correction], locate: Locate, num_kps: dict[int, int], invalid: list[dict]
) -> tuple[dict[int, tuple[tuple, Correction]], Counter[int]]:
    """Which correction labels each instance: (instance id -> (sort key, correction), corrections per instance).
    The key, (completed_at, store order), makes "latest, then later in store order" one comparison. A correction that
    does not fit its instance is appended to ``invalid`` before the vote, so it never shadows an earlier good one."""
    winner: dict[int, tuple[tuple, Correction]] = {}
    count: Counter[int] = Counter()
    for order, c in enumerate(corrections):
        base = locate(c, f"correction {c.correction_id}")
        if base is None:
            continue
        if c.image_file is not None:  # identified by file and box: the ids follow (else _misfit checks image_id)
            c = replace(c, instance_id=base["id"], image_id=base["image_id"])
        problem = _misfit(c, base, num_kps)
        if problem:
            invalid.append({"instance_id": c.instance_id, "correction_id": c.correction_id, "message": problem})
            log.warning("merge: correction %s of instance %d left out: %s", c.correction_id, c.instance_id, problem)
            continue
        count[c.instance_id] += 1
        key = (parse_time(c.completed_at), order)
        if c.instance_id not in winner or key > winner[c.instance_id][0]:
            winner[c.instance_id] = (key, c)
    return winner, count


def _no_person_verdicts(
    skips: list[Skip], locate: Locate
) -> tuple[dict[int, datetime], dict[int, datetime], dict[str, int]]:
    """(instance id -> the latest "no person" time of a verdict on that person, the same for verdicts that reached
    the person only by re-mapping (the found box the annotator saw is gone, someone is found over it), skips counted
    per reason)."""
    direct: dict[int, datetime] = {}
    moved: dict[int, datetime] = {}
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for s in skips:
        skipped[s.reason] += 1
        base = locate(s, f"skip {s.task_id}:{s.annotation_id}")
        if base is None or s.reason != "no_person":
            continue
        # a found person's id is a function of its box: another id is another box, one a retrained finder gave
        verdicts = moved if is_found_id(s.instance_id) and base["id"] != s.instance_id else direct
        t = parse_time(s.at)
        verdicts[base["id"]] = max(t, verdicts.get(base["id"], t))
    return direct, moved, skipped


def merge(seed: dict, pool: dict, corrections: list[Correction], skips: list[Skip]) -> tuple[dict, dict]:
    """Seed labels + the store's records -> (train COCO dict, report dict). Pure and deterministic.

    ``seed``: COCO dict of the seed labels (labeled.json); ``pool``: COCO dict of the unlabeled instances (pool.json,
    zero keypoints); ``corrections`` / ``skips`` in store order (``read_store``). Rules (docs/DESIGN.md §3):

    * a correction of a seed instance replaces its label; of a pool instance, adds it (box and keypoints from the
      correction; image, category, ``area`` and other fields from the pool annotation);
    * several corrections of one instance: the latest ``completed_at`` wins, ties go to the later in store order; the
      instance is listed under ``conflict_instance_ids``;
    * a ``no_person`` skip removes the instance (seed label included) unless a correction completed after it exists;
      other skips are only counted;
    * a person an annotator added (``Correction.added``) is a new instance, or the person already there whom its
      box covers (``_with_added_people``); so is a correction of a found person whose id a retrained finder no
      longer gives (it labels the re-found person over the same spot, else a person of its own); ``added_people``
      counts the new ones;
    * a record is applied to the person it identifies (``image_file`` + ``instance_bbox``, module doc): the instance
      with its id when they match, else the matching person on the same image (``remapped``), else nobody
      (``mismatched``, with the reason);
    * an instance id in neither file (``unknown_instances``) and a correction that does not fit its instance (other
      image, wrong number of keypoints: ``invalid_corrections``) are reported and left out, not raised: the store is
      append-only, so an exception here would block every later round.

    Output annotations carry ``source`` ("seed" / "human"); human ones also ``correction_id``
    ("<task_id>:<annotation_id>") and ``model_version``. ``num_keypoints`` is recounted from the flags. Images are
    those referenced, sorted by id; annotations sorted by id; categories and other top-level keys from ``seed``.
    The inputs are not modified; nested values merge does not change (e.g. segmentation) are shared with them.

    Long because its docstring states every merge rule next to the code that applies it; the vote and the no-person
    verdicts are helpers.
    """
    images = {im["id"]: im for im in pool["images"]}
    images.update({im["id"]: im for im in seed["images"]})  # seed's record wins when both have the image
    pool, corrections, added = _with_added_people(seed, pool, corrections, skips, images)
    seed_by_id = {a["id"]: a for a in seed["annotations"]}
    pool_by_id = {a["id"]: a for a in pool["annotations"]}
    num_kps = {c["id"]: len(c["keypoints"]) for c in seed["categories"] if c.get("keypoints")}
    people = _People(seed, pool, images)

    unknown: set[int] = set()
    invalid = []
    remapped: list[dict] = []
    mismatched: list[dict] = []

    def locate(record: Correction | Skip, record_id: str) -> dict | None:
        """The instance the record labels (re-mapped when our numbering moved); None: reported, not applied."""
        base, why = people.identify(record)
        if base is None:
            if record.image_file is None and record.instance_bbox is None and record.instance_id not in people.by_id:
                unknown.add(record.instance_id)
            else:
                mismatched.append({"instance_id": record.instance_id, "record": record_id, "message": why})
                log.warning("merge: %s of instance %d: %s", record_id, record.instance_id, why)
            return None
        if base["id"] != record.instance_id:
            remapped.append({"record": record_id, "from_instance": record.instance_id, "to_instance": base["id"]})
            log.warning(
                "merge: %s was made for instance %d, which is instance %d in this data set: applied there",
                record_id,
                record.instance_id,
                base["id"],
            )
        return base

    winner, count = _vote(corrections, locate, num_kps, invalid)
    no_person, moved, skipped = _no_person_verdicts(skips, locate)
    # A verdict that reached a person only by re-mapping (the box the annotator deleted is gone, someone is found
    # over it) never removes a human label: that someone may be the person drawn over the deleted box in the same
    # annotation, or anybody a retrained finder now finds there. On an unlabeled person it holds.
    for iid, t in moved.items():
        if iid not in winner:
            no_person[iid] = max(t, no_person.get(iid, t))

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
        if is_stand_in(base):  # the person drawn on an image where the finder found nobody: nothing of the image
            base = {k: v for k, v in base.items() if k not in ("area", "detection_score")}
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
        # every instance the annotators ruled "no person" (after re-mapping): select never sends one again
        "no_person_ids": sorted(no_person),
        "skipped": skipped,
        "unknown_instances": sorted(unknown),
        "invalid_corrections": sorted(invalid, key=lambda d: d["instance_id"]),  # stable: store order within one
        "remapped": remapped,
        "mismatched": mismatched,
        "effort": effort_summary(corrections),
        "labeled_total": len(annotations),
        "added_people": added,
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


def merge_labels(seed: Path, pool: Path, corrections: Path, out: Path) -> tuple[dict, dict]:
    """Seed labels + every stored correction and skip -> ``out`` (COCO, the training labels); returns (the written
    COCO dict, the merge report with ``round``: the round a model trained on it belongs to). The rules are
    ``pipeline.merge.merge``; a missing store is an empty one."""
    seed_coco = read_coco(seed).to_dict()  # read_coco validates: a broken file fails here with every problem listed
    pool_coco = read_coco(pool).to_dict()
    done, skips = read_store(corrections)
    train, report = merge(seed_coco, pool_coco, done, skips)
    # round 1 has the seed labels only, and every pull that brought something new starts the next one
    report["round"] = round_number(corrections)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_coco(out, train)
    return train, report
