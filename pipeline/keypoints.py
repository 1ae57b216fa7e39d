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


def _flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
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
    ``sigma_source`` says where the sigmas came from ("coco", "params", "default") so every metric can log it.
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

        Sigmas: ``sigmas`` when given (from params), else COCO's when every name is a COCO name, else 0.1 each.
        Flip pairs: ``flip_pairs`` (0-based) when given, else derived from left_/right_ names.
        """
        names = tuple(str(n) for n in category.get("keypoints") or ())
        if not names:
            raise ValueError(f"category {category.get('id')} ({category.get('name')!r}) has no 'keypoints' names")
        skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or ())
        if sigmas is not None:
            sig, source = tuple(float(s) for s in sigmas), "params"
        elif all(n in COCO_SIGMAS for n in names):
            sig, source = tuple(COCO_SIGMAS[n] for n in names), "coco"
        else:
            sig, source = (DEFAULT_SIGMA,) * len(names), "default"
        pairs = (
            tuple((int(a), int(b)) for a, b in flip_pairs) if flip_pairs is not None else _flip_pairs_from_names(names)
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
