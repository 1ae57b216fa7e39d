"""Keypoint schema: names, skeleton, flip pairs and OKS sigmas, read from a COCO category.

Nothing in poseloop assumes 17 keypoints: every array's K comes from a ``KeypointSchema``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# 1-based, as in person_keypoints_*.json.
COCO_SKELETON_1BASED: tuple[tuple[int, int], ...] = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)

# COCO's OKS sigmas (cocoapi), keyed by name so a reordered or partial COCO-named schema gets the right ones.
COCO_SIGMAS: dict[str, float] = dict(
    zip(
        COCO_KEYPOINT_NAMES,
        (
            0.026,
            0.025,
            0.025,
            0.035,
            0.035,
            0.079,
            0.079,
            0.072,
            0.072,
            0.062,
            0.062,
            0.107,
            0.107,
            0.087,
            0.087,
            0.089,
            0.089,
        ),
        strict=True,
    )
)

DEFAULT_SIGMA = 0.1

# Published per-keypoint OKS sigmas of other human-pose data sets, keyed by keypoint name. Used when a category's
# names are exactly one of these sets (in any order); ``data.sigmas`` in params.yaml overrides them.
# CrowdPose: its own cocoapi fork and MMPose's configs/_base_/datasets/crowdpose.py (COCO's values, head / neck 0.079);
# its JSON names the head keypoint "head", MMPose "top_head": both are accepted.
CROWDPOSE_KEYPOINT_NAMES: tuple[str, ...] = (
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "head",
    "neck",
)
_CROWDPOSE_SIGMAS = (0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079)
# AI Challenger (AIC): AI_Challenger_2017 keypoint_eval.py (delta = 2 sigma), as MMPose's aic.py gives them.
AIC_KEYPOINT_NAMES: tuple[str, ...] = (
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "head_top",
    "neck",
)
_AIC_SIGMAS = (
    0.01388152,
    0.01515228,
    0.01057665,
    0.01417709,
    0.01497891,
    0.01402144,
    0.03909642,
    0.03686941,
    0.01981803,
    0.03843971,
    0.03412318,
    0.02415081,
    0.01291456,
    0.01236173,
)
# MPII: 16 joints in MPII's order (the layout of MMPose's mpii_{train,val}.json); MPII itself is scored with PCKh,
# these sigmas are MMPose's mpii.py ("adapted from COCO"), so OKS numbers on MPII are comparable with MMPose's.
MPII_KEYPOINT_NAMES: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
_MPII_SIGMAS = (
    0.089,
    0.083,
    0.107,
    0.107,
    0.083,
    0.089,
    0.026,
    0.026,
    0.026,
    0.026,
    0.062,
    0.072,
    0.179,
    0.179,
    0.072,
    0.062,
)
# MPII's skeleton (0-based), for files made by the MPII reader.
MPII_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (MPII_KEYPOINT_NAMES.index(a), MPII_KEYPOINT_NAMES.index(b))
    for a, b in (
        ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"),
        ("right_hip", "pelvis"),
        ("pelvis", "left_hip"),
        ("left_hip", "left_knee"),
        ("left_knee", "left_ankle"),
        ("pelvis", "thorax"),
        ("thorax", "upper_neck"),
        ("upper_neck", "head_top"),
        ("upper_neck", "right_shoulder"),
        ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_wrist"),
        ("upper_neck", "left_shoulder"),
        ("left_shoulder", "left_elbow"),
        ("left_elbow", "left_wrist"),
    )
)

# sigma_source value -> name -> sigma. Checked in this order; COCO's own names are handled by COCO_SIGMAS.
KNOWN_SIGMAS: dict[str, dict[str, float]] = {
    "crowdpose": dict(zip(CROWDPOSE_KEYPOINT_NAMES, _CROWDPOSE_SIGMAS, strict=True)),
    "aic": dict(zip(AIC_KEYPOINT_NAMES, _AIC_SIGMAS, strict=True)),
    "mpii": dict(zip(MPII_KEYPOINT_NAMES, _MPII_SIGMAS, strict=True)),
}
# Other spellings of the same keypoint in published files.
_NAME_ALIASES = {"top_head": "head"}


def canonical_order(names: Sequence[str]) -> list[str]:
    """``names`` in the order of the published schema they all belong to (COCO, CrowdPose, AIC, MPII), else as
    given. For formats that carry names but no order (a Label Studio export lists the labels placed, person by
    person)."""
    for table in (COCO_SIGMAS, *KNOWN_SIGMAS.values()):
        if all(n in table for n in names):
            order = list(table)
            return sorted(names, key=order.index)
    return list(names)


def known_sigmas(names: Sequence[str]) -> tuple[str, tuple[float, ...]] | None:
    """(data set, sigmas (K,)) when ``names`` are exactly the keypoints of COCO, CrowdPose, AIC or MPII (any
    order); None otherwise. Matching is on the whole set: a partial or extended schema is not any of them."""
    if all(n in COCO_SIGMAS for n in names) and len(set(names)) == len(names):
        return "coco", tuple(COCO_SIGMAS[n] for n in names)
    canon = [_NAME_ALIASES.get(n.lower(), n.lower()) for n in names]
    for dataset, table in KNOWN_SIGMAS.items():
        if sorted(canon) == sorted(table):
            return dataset, tuple(table[n] for n in canon)
    return None


def flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Pairs (i, j) with i < j where names[i] and names[j] differ only by a left/right marker."""
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        low = name.lower()
        for left, right in (("left_", "right_"), ("left", "right"), ("l_", "r_")):
            if low.startswith(left):
                mirrored = right + name[len(left) :]
                j = next((index[n] for n in names if n.lower() == mirrored.lower()), None)
                if j is not None:
                    pairs.append((min(i, j), max(i, j)))
                break
    return tuple(sorted(set(pairs)))


@dataclass(frozen=True)
class KeypointSchema:
    """What the K keypoints of one category are.

    ``skeleton`` and ``flip_pairs`` hold 0-based keypoint indices; ``sigmas`` has shape (K,).
    ``sigma_source`` says where the sigmas came from ("coco", "crowdpose", "aic", "mpii", "params", "default") so every
    metric can log it.
    """

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    sigma_source: str = "coco"
    category_id: int = 1
    category_name: str = "person"

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0:
            raise ValueError("a keypoint schema needs at least one keypoint name")
        if len(set(self.names)) != k:
            raise ValueError(f"keypoint names are not unique: {list(self.names)}")
        if len(self.sigmas) != k:
            raise ValueError(f"{len(self.sigmas)} OKS sigmas for {k} keypoints {list(self.names)}")
        if any(not (s > 0) for s in self.sigmas):
            raise ValueError(f"OKS sigmas must be > 0, got {list(self.sigmas)}")
        for a, b in (*self.skeleton, *self.flip_pairs):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton / flip pair ({a}, {b}) is outside 0..{k - 1}")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def sigma_array(self) -> np.ndarray:
        """OKS sigmas, shape (K,), float64."""
        return np.asarray(self.sigmas, dtype=np.float64)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation (K,): keypoint j of a mirrored image is keypoint flip_index[j] of the original."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @classmethod
    def from_coco_category(
        cls,
        category: dict,
        sigmas: Sequence[float] | None = None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
    ) -> KeypointSchema:
        """Build from a COCO category dict (``keypoints`` names, 1-based ``skeleton``).

        Sigmas: ``sigmas`` when given (from params), else the published ones when the names are those of COCO,
        CrowdPose, AIC or MPII (``known_sigmas``), else 0.1 each. ``sigma_source`` says which.
        Flip pairs: ``flip_pairs`` (0-based) when given, else derived from left_/right_ names.
        """
        names = tuple(str(n) for n in category.get("keypoints") or ())
        if not names:
            raise ValueError(f"category {category.get('id')} ({category.get('name')!r}) has no 'keypoints' names")
        skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or ())
        known = known_sigmas(names)
        if sigmas is not None:
            sig, source = tuple(float(s) for s in sigmas), "params"
        elif known is not None:
            source, sig = known
        else:
            sig, source = (DEFAULT_SIGMA,) * len(names), "default"
        if flip_pairs is not None:  # from params.yaml: name the key, not only the pair
            k = len(names)
            for pair in flip_pairs:
                if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= int(i) < k for i in pair):
                    raise ValueError(
                        f"params.yaml: data.flip_pairs: {list(pair)} is not a pair of two different keypoint indices "
                        f"in 0..{k - 1} (0-based; the {k} keypoints: {', '.join(names)})"
                    )
        pairs = (
            tuple((int(a), int(b)) for a, b in flip_pairs) if flip_pairs is not None else flip_pairs_from_names(names)
        )
        return cls(
            names=names,
            skeleton=skeleton,
            flip_pairs=pairs,
            sigmas=sig,
            sigma_source=source,
            category_id=int(category.get("id", 1)),
            category_name=str(category.get("name", "person")),
        )

    @classmethod
    def coco17(cls) -> KeypointSchema:
        return cls.from_coco_category(
            {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": COCO_SKELETON_1BASED}
        )

    def to_coco_category(self) -> dict:
        """The COCO category dict (1-based skeleton), the inverse of ``from_coco_category``."""
        return {
            "id": self.category_id,
            "name": self.category_name,
            "supercategory": self.category_name,
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }

    def describe_sigmas(self) -> dict[str, float]:
        """name -> sigma, for logging next to every metric."""
        return dict(zip(self.names, self.sigmas, strict=True))

    def to_json(self) -> dict:
        return {
            "names": list(self.names),
            "skeleton": [list(p) for p in self.skeleton],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "sigmas": list(self.sigmas),
            "sigma_source": self.sigma_source,
            "category_id": self.category_id,
            "category_name": self.category_name,
        }

    @classmethod
    def from_json(cls, d: dict) -> KeypointSchema:
        return cls(
            names=tuple(d["names"]),
            skeleton=tuple(tuple(p) for p in d["skeleton"]),
            flip_pairs=tuple(tuple(p) for p in d["flip_pairs"]),
            sigmas=tuple(d["sigmas"]),
            sigma_source=d.get("sigma_source", "params"),
            category_id=int(d.get("category_id", 1)),
            category_name=str(d.get("category_name", "person")),
        )
