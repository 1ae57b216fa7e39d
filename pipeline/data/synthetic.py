"""Procedural people with the 17 COCO keypoints: the embedded default data set (docs/DESIGN.md section 10).

Each person is a small 3-D kinematic model (spine, shoulders, arms, legs, a spherical head) posed with sampled joint
angles and body proportions, turned about the vertical axis (yaw: front, back, profile), projected orthographically,
then rotated in the image plane, scaled and placed. Parts are painted back to front (painter's algorithm on depth) as
outlined capsules and polygons in clothing colours, with stripes / noise textures, onto a cluttered background.

Left and right are decidable from the picture the way they are in photos, and only that way: the head carries a face
(eyes, nose, mouth; hair on the back and top), so it tells front from back and the nose tells which way a profile
looks; shirts show a neckline and sometimes a print on the front only, some people carry a backpack on their back;
feet point forward; near limbs are drawn over the torso, far ones behind it. There is deliberately NO
left/right colour code (say, darker left sleeves): such a cue is not mirror symmetric, so flip augmentation and flip
test (docs/DESIGN.md section 5) would teach / average contradictory answers and ``flip_disagreement`` would be large on
every instance. The generator's distribution is mirror symmetric: a mirrored sample with swapped labels is as likely
as the sample itself, exactly the assumption flips rely on.

Coordinates (shared with ``pipeline.data.transforms``): **pixel centres are integers**; pixel ``(c, r)`` covers
``[c - 0.5, c + 0.5) x [r - 0.5, r + 0.5)``, which is how cv2 draws (sub-pixel points are passed with ``shift=4``) and
how ``cv2.warpAffine`` samples. Keypoints are sub-pixel floats. A keypoint is labeled (v > 0) only when
``0 <= x <= W - 1`` and ``0 <= y <= H - 1``, so rounding it always gives a pixel of the image.

Annotations (COCO keypoints, category 1 "person"):

* ``keypoints``: ``[x, y, v] * 17``. v = 2: the pixel under the keypoint (``floor(x + 0.5), floor(y + 0.5)``) was
  painted by a body part of this person that the joint belongs to (a wrist by its forearm or hand, a shoulder by its
  upper arm or, when the shoulder is on the camera's side of the torso, by the torso; a face point additionally needs
  its face side turned to the camera). v = 1: inside the image but covered by an occluder, another person or the
  person's own body (e.g. the far arm behind the torso, the eyes of a person seen from the back). v = 0: outside the
  image, coordinates (0, 0).
* ``bbox``: ``[x, y, w, h]``, the *amodal* tight box of everything the person's parts cover (occluded parts included,
  so every labeled keypoint lies inside it), computed analytically from the drawn primitives (within ~1 px of the
  rasterised pixels) and clipped to ``[0, W - 1] x [0, H - 1]``.
* ``area``: the number of pixels where this person is visible in the final image (like COCO's segmentation area, the
  visible part; it is the OKS scale).
* ``synthetic_tags``: derived from what was generated, see ``TAGS``.

People whose visible part is tiny (fewer than 3 labeled or 2 visible keypoints, box side < 8 px, area < 20 px) stay
in the picture but get no annotation.

Determinism: image ``i`` is drawn from ``np.random.default_rng([seed, i])`` alone, so the output is byte identical
for a given config and any subset of images can be rendered in any order or in parallel.
"""

from __future__ import annotations

import colorsys
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from pipeline.keypoints import COCO_KEYPOINT_NAMES, KeypointSchema

GENERATOR_VERSION = 1
TAGS = ("occluded", "rare_pose", "small", "low_contrast", "crowded", "truncated")
"""``occluded``: >= 30 % of the labeled keypoints are covered by an occluder or another person (self-occlusion, as
of the far arm in a profile, does not count). ``rare_pose``: drawn from the rare-pose sampler (arms
over the head, lying, crouching, upside down, high kick). ``small``: the person's (unclipped) box has its longer side
below 20 % of the image's shorter side. ``low_contrast``: colours drawn close to the background behind the person.
``crowded``: the image was generated as a crowd. ``truncated``: some keypoint lies outside the image (v = 0)."""

OCCLUDED_FRACTION = 0.3
SMALL_FRACTION = 0.2
ANNOTATION_ID_STRIDE = 100  # annotation id = image_id * stride + person index (at most 2 * max_people <= 40 people)
JPEG_QUALITY = 92
_SHIFT = 4  # cv2 fixed-point bits: coordinates are passed as round(x * 16)
_ONE = 1 << _SHIFT

# ------------------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Hard-case probabilities are per person (rare_pose, occluded, small, low_contrast,
    truncated) or per image (crowded, blur, noise)."""

    num_images: int = 400
    image_width: int = 256
    image_height: int = 256
    max_people: int = 3  # per image; crowded images have max_people + 1 .. 2 * max_people
    seed: int = 0
    rare_pose: float = 0.1
    occluded: float = 0.15
    small: float = 0.1
    low_contrast: float = 0.1
    crowded: float = 0.05
    truncated: float = 0.1
    blur: float = 0.2
    noise: float = 0.3

    def __post_init__(self) -> None:
        if self.num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {self.num_images}")
        if min(self.image_width, self.image_height) < 32:
            raise ValueError(f"images must be at least 32x32, got {self.image_width}x{self.image_height}")
        if not 1 <= self.max_people < ANNOTATION_ID_STRIDE // 2:
            raise ValueError(f"max_people must be in 1..{ANNOTATION_ID_STRIDE // 2 - 1}, got {self.max_people}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} is a probability, got {value}")


# ------------------------------------------------------------------------------------------------------- body model

# Painted parts. A pixel of the part map holds (person index + 1) * 32 + part.
PART_NAMES = (
    "torso",
    "neck",
    "head",
    "left_ear",
    "right_ear",
    "left_upper_arm",
    "right_upper_arm",
    "left_forearm",
    "right_forearm",
    "left_hand",
    "right_hand",
    "left_thigh",
    "right_thigh",
    "left_shin",
    "right_shin",
    "left_foot",
    "right_foot",
    "backpack",
)
(
    TORSO,
    NECK,
    HEAD,
    L_EAR,
    R_EAR,
    L_UARM,
    R_UARM,
    L_FARM,
    R_FARM,
    L_HAND,
    R_HAND,
    L_THIGH,
    R_THIGH,
    L_SHIN,
    R_SHIN,
    L_FOOT,
    R_FOOT,
    BACKPACK,
) = range(len(PART_NAMES))
PART_BITS = 5
OCCLUDER_VALUE = 0xFFFF  # part-map value of occluder objects

# Body points: the 17 COCO keypoints first (same order), then helpers for drawing.
K = len(COCO_KEYPOINT_NAMES)
HEAD_C, NECK_P, PELVIS, L_HAND_END, R_HAND_END, L_TOE, R_TOE, L_HEEL, R_HEEL, MOUTH, CHEST_N = range(K, K + 11)
TORSO_CORNERS = slice(K + 11, K + 19)
NECKLINE = slice(K + 19, K + 22)  # a V of skin at the top of the shirt's front
PRINT = slice(K + 22, K + 26)  # a print on the shirt's front
BACKPACK_CORNERS = slice(K + 26, K + 34)
NUM_POINTS = K + 34
(
    NOSE,
    L_EYE,
    R_EYE,
    L_EAR_K,
    R_EAR_K,
    L_SHO,
    R_SHO,
    L_ELB,
    R_ELB,
    L_WRI,
    R_WRI,
    L_HIP,
    R_HIP,
    L_KNEE,
    R_KNEE,
    L_ANK,
    R_ANK,
) = range(K)

# Which parts may paint a keypoint for it to count as visible (the torso is added per person for shoulders and hips
# on the camera's side of the body).
_ALLOWED = np.zeros((K, 32), dtype=bool)
for _k, _parts in {
    NOSE: (HEAD,),
    L_EYE: (HEAD,),
    R_EYE: (HEAD,),
    L_EAR_K: (HEAD, L_EAR),
    R_EAR_K: (HEAD, R_EAR),
    L_SHO: (L_UARM,),
    R_SHO: (R_UARM,),
    L_ELB: (L_UARM, L_FARM),
    R_ELB: (R_UARM, R_FARM),
    L_WRI: (L_FARM, L_HAND),
    R_WRI: (R_FARM, R_HAND),
    L_HIP: (L_THIGH,),
    R_HIP: (R_THIGH,),
    L_KNEE: (L_THIGH, L_SHIN),
    R_KNEE: (R_THIGH, R_SHIN),
    L_ANK: (L_SHIN, L_FOOT),
    R_ANK: (R_SHIN, R_FOOT),
}.items():
    _ALLOWED[_k, list(_parts)] = True

# Face directions on the unit head sphere, head frame (a: person's left, u: up, f: forward). Eyes and ears are on
# the surface; the nose sticks out so that a profile shows it on the silhouette.
_FACE_DIRS = {
    NOSE: (0.0, -0.12, 1.06),
    L_EYE: (0.36, 0.2, 0.91),
    R_EYE: (-0.36, 0.2, 0.91),
    L_EAR_K: (0.997, 0.0, -0.08),
    R_EAR_K: (-0.997, 0.0, -0.08),
    MOUTH: (0.0, -0.48, 0.88),
}
# A face point is in view when the camera-facing component of its direction exceeds this.
_FACING_MIN = {NOSE: -0.3, L_EYE: 0.1, R_EYE: 0.1, L_EAR_K: -0.4, R_EAR_K: -0.4, MOUTH: 0.1}

# Label-map codes for one person: part p paints 2p + 1 (outline) and 2p + 2 (fill); head and torso have extra codes.
_HAIR, _EYE, _NOSE_C, _MOUTH_C, _NECKLINE_C, _PRINT_C = 40, 41, 42, 43, 44, 45
_CODE_PART = np.zeros(64, dtype=np.uint16)
_CODE_PART[1 : 2 * len(PART_NAMES) + 1] = np.arange(2 * len(PART_NAMES)) // 2
_CODE_PART[[_HAIR, _EYE, _NOSE_C, _MOUTH_C]] = HEAD
_CODE_PART[[_NECKLINE_C, _PRINT_C]] = TORSO
_HEAD_CODES = np.zeros(64, dtype=bool)
_HEAD_CODES[[2 * HEAD + 2, _HAIR]] = True  # shaded as a sphere
_SHIRT_CODES = np.zeros(64, dtype=bool)
_SHIRT_CODES[[2 * TORSO + 2, 2 * L_UARM + 2, 2 * R_UARM + 2]] = True
_PANTS_CODES = np.zeros(64, dtype=bool)
_PANTS_CODES[[2 * L_THIGH + 2, 2 * R_THIGH + 2]] = True

_SKIN = np.array(
    [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 36), (255, 205, 178)],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [(28, 22, 18), (60, 40, 25), (100, 65, 35), (165, 120, 70), (225, 195, 125), (150, 150, 150), (125, 45, 20)],
    dtype=np.float64,
)

RARE_POSES = ("arms_up", "lying", "crouch", "upside_down", "kick")


@dataclass
class _Person:
    """One generated person. Image-space arrays: ``xy`` (NUM_POINTS, 2) pixels, ``z`` (NUM_POINTS,) depth in pixels
    toward the camera."""

    index: int
    xy: np.ndarray
    z: np.ndarray
    radius: dict[int, float]  # part -> capsule radius in pixels
    head_r: float  # pixels
    head_yaw: float  # body yaw + head turn (radians); 0 = facing the camera
    roll: float  # in-plane rotation (radians)
    facing: np.ndarray  # (K,) bool: face points turned to the camera (True for body joints)
    torso_ok: np.ndarray  # (K,) bool: shoulder / hip on the camera's side of the torso
    box: np.ndarray  # (4,) x0, y0, x1, y1 amodal, unclipped
    height: float  # pixels per body height
    hair_front: float = 0.0  # hair covers head points whose forward component is below this
    chest_facing: float = 0.0  # cosine between the chest's normal and the view direction
    neckline: bool = False
    shirt_print: bool = False
    backpack: bool = False
    rare: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)


def _limb_dir(side: float, abduct: float, flex: float) -> np.ndarray:
    """Unit direction from a hanging limb (down) raised sideways by ``abduct`` and forward by ``flex`` (radians)."""
    cf = math.cos(flex)
    return np.array([side * math.sin(abduct) * cf, -math.cos(abduct) * cf, math.sin(flex)])


def _bend(d: np.ndarray, toward: np.ndarray, angle: float) -> np.ndarray:
    """Rotate unit vector ``d`` by ``angle`` in the plane spanned by d and ``toward``."""
    t = toward - np.dot(toward, d) * d
    n = float(np.linalg.norm(t))
    if n < 1e-6:  # toward is parallel to d: bend upward (or forward) instead
        t = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
        t = t - np.dot(t, d) * d
        n = float(np.linalg.norm(t))
    return d * math.cos(angle) + t / n * math.sin(angle)


def _sample_pose(rng: np.random.Generator, rare: str | None) -> dict:
    """Joint angles in radians. Left and right are sampled from the same laws (mirror symmetry)."""
    deg = math.radians
    u = rng.uniform
    swing = rng.normal(0.0, deg(15))  # walking: one leg forward, the other back
    p = {
        "lean": rng.normal(0.0, deg(5)),
        "bend": rng.normal(0.0, deg(4)),
        "twist": rng.normal(0.0, deg(10)),
        "arm_abd": [deg(5 + 95 * u() ** 2) for _ in range(2)],
        "arm_flex": [rng.normal(0.0, deg(30)) for _ in range(2)],
        "elbow": [deg(u(0, 100)) for _ in range(2)],
        "elbow_to": [np.array([-u(-0.3, 0.6), u(-0.3, 0.6), 1.0]) for _ in range(2)],
        "leg_abd": [deg(u(0, 12)) for _ in range(2)],
        "leg_flex": [swing + rng.normal(0, deg(5)), -swing + rng.normal(0, deg(5))],
        "knee": [deg(u(0, 30)) + max(0.0, 0.6 * f) for f in (swing, -swing)],
        "ankle": [deg(u(75, 100)) for _ in range(2)],
        "roll": rng.normal(0.0, deg(6)),
        "head_yaw": float(np.clip(rng.normal(0.0, deg(20)), -deg(40), deg(40))),
    }
    if rare == "arms_up":
        for s in range(2):
            if s == 0 or u() < 0.7:
                p["arm_abd"][s] = deg(u(145, 180))
                p["elbow"][s] = deg(u(0, 70))
                p["arm_flex"][s] = rng.normal(0.0, deg(15))
                p["elbow_to"][s] = np.array([-1.0, 0.3, u(0, 0.6)])  # hands meet over the head
    elif rare == "lying":
        p["roll"] = float(rng.choice([-1.0, 1.0])) * deg(u(70, 110))
    elif rare == "crouch":
        p["lean"] = deg(u(15, 45))
        f = deg(u(75, 115))
        p["leg_flex"] = [f + rng.normal(0, deg(8)), f + rng.normal(0, deg(8))]
        p["knee"] = [deg(u(100, 140)) for _ in range(2)]
        p["leg_abd"] = [deg(u(5, 30)) for _ in range(2)]
        p["arm_flex"] = [deg(u(20, 80)) for _ in range(2)]
        p["elbow"] = [deg(u(20, 100)) for _ in range(2)]
    elif rare == "upside_down":
        p["roll"] = deg(u(130, 230))
        p["arm_abd"] = [deg(u(150, 180)) for _ in range(2)]
        p["elbow"] = [deg(u(0, 30)) for _ in range(2)]
        p["leg_abd"] = [deg(u(10, 40)) for _ in range(2)]
        p["leg_flex"] = [rng.normal(0, deg(10)) for _ in range(2)]
        p["knee"] = [deg(u(0, 40)) for _ in range(2)]
    elif rare == "kick":
        s = int(rng.integers(2))
        p["leg_flex"][s] = deg(u(60, 100))
        p["knee"][s] = deg(u(0, 50))
        p["leg_flex"][1 - s] = rng.normal(0, deg(5))
        p["knee"][1 - s] = deg(u(0, 20))
        p["arm_abd"] = [deg(u(40, 110)) for _ in range(2)]
    return p


def _build_body(rng: np.random.Generator, pose: dict) -> tuple[np.ndarray, dict[int, float], float]:
    """3-D body points in height units, body frame (a: person's left, u: up, f: forward), pelvis at the origin.

    Returns points (NUM_POINTS, 3), part radii (height units) and the head radius.

    Long because the order of the random draws is the data set; one function keeps that order in view (the committed
    round's numbers depend on it).
    """
    g = rng.normal(1.0, 0.05, size=6)  # segment length factors: torso, upper arm, forearm, thigh, shin, head
    build = rng.uniform(0.85, 1.25)  # body width
    hip_build = build * rng.uniform(0.9, 1.15)
    torso, upper, fore, thigh, shin = 0.3 * g[0], 0.17 * g[1], 0.15 * g[2], 0.245 * g[3], 0.245 * g[4]
    head_r = 0.066 * g[5]
    sh_w, hip_w = 0.235 * build, 0.15 * hip_build
    pts = np.zeros((NUM_POINTS, 3))

    lean, bend, tw = pose["lean"], pose["bend"], pose["twist"]
    spine = np.array([math.sin(bend), math.cos(lean) * math.cos(bend), math.sin(lean) * math.cos(bend)])
    lat = np.array([math.cos(tw), 0.0, math.sin(tw)])  # shoulder line, twisted about the vertical
    fwd_top = np.cross(lat, spine)
    fwd_top /= np.linalg.norm(fwd_top)
    neck = spine * torso
    pts[NECK_P] = neck
    pts[HEAD_C] = neck + spine * (0.105 * g[5])
    for side, sho, hip in ((1.0, L_SHO, L_HIP), (-1.0, R_SHO, R_HIP)):
        pts[sho] = neck + side * lat * sh_w / 2 - spine * 0.015
        pts[hip] = (side * hip_w / 2, 0.0, 0.0)

    # Torso: a box from the shoulder line to the hips, 8 corners, drawn as the convex hull of their projection.
    corners = []
    for top in (True, False):
        centre, across, depth = (
            (neck, lat, fwd_top) if top else (pts[PELVIS], np.array([1.0, 0, 0]), np.array([0, 0, 1.0]))
        )
        half_w = sh_w / 2 + 0.012 if top else hip_w / 2 + 0.045 * hip_build
        half_d = 0.055 * build if top else 0.065 * hip_build
        for sa in (-1.0, 1.0):
            for sd in (-1.0, 1.0):
                corners.append(centre + sa * across * half_w + sd * depth * half_d)
    pts[TORSO_CORNERS] = corners

    # Front and back of the shirt: what tells a person's front from their back below the head, as in photos (a
    # neckline, a print; a backpack on the back). All of it is left/right symmetric.
    pts[CHEST_N] = neck + fwd_top  # the chest's outward normal, as a point: z[CHEST_N] - z[NECK_P]
    top_front = neck + fwd_top * 0.055 * build
    bottom_front = np.array([0.0, 0.0, 0.065 * hip_build])
    down = bottom_front - top_front
    down /= np.linalg.norm(down)
    pts[NECKLINE] = [top_front + lat * 0.045, top_front - lat * 0.045, top_front + down * 0.07]
    c = top_front + down * 0.12
    half = 0.035 * build
    pts[PRINT] = [c + (sa * lat + sd * down) * half for sa, sd in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    back = top_front - fwd_top * 0.11 * build + down * 0.05
    pts[BACKPACK_CORNERS] = [
        back + sa * lat * 0.075 + sv * down * 0.085 + down * 0.085 - sd * fwd_top * 0.045
        for sa in (-1, 1)
        for sv in (-1, 1)
        for sd in (0, 1)
    ]

    for s, (side, sho, elb, wri, hand) in enumerate(
        ((1.0, L_SHO, L_ELB, L_WRI, L_HAND_END), (-1.0, R_SHO, R_ELB, R_WRI, R_HAND_END))
    ):
        d = _limb_dir(side, pose["arm_abd"][s], pose["arm_flex"][s])
        to = pose["elbow_to"][s] * np.array([side, 1.0, 1.0])
        fd = _bend(d, to, pose["elbow"][s])
        pts[elb] = pts[sho] + d * upper
        pts[wri] = pts[elb] + fd * fore
        pts[hand] = pts[wri] + fd * 0.055
    for s, (side, hip, knee, ank, toe, heel) in enumerate(
        ((1.0, L_HIP, L_KNEE, L_ANK, L_TOE, L_HEEL), (-1.0, R_HIP, R_KNEE, R_ANK, R_TOE, R_HEEL))
    ):
        d = _limb_dir(side, pose["leg_abd"][s], pose["leg_flex"][s])
        sd = _bend(d, np.array([0.0, -0.4, -1.0]), pose["knee"][s])  # knees bend backward
        foot = _bend(sd, np.array([0.0, 0.0, 1.0]), pose["ankle"][s])
        pts[knee] = pts[hip] + d * thigh
        pts[ank] = pts[knee] + sd * shin
        pts[toe] = pts[ank] + foot * 0.08
        pts[heel] = pts[ank] - foot * 0.02 + sd * 0.018

    # Face points on the head sphere, turned by the head's own yaw relative to the body.
    c, s_ = math.cos(pose["head_yaw"]), math.sin(pose["head_yaw"])
    for k, (a, up, f) in _FACE_DIRS.items():
        pts[k] = pts[HEAD_C] + head_r * np.array([a * c + f * s_, up, f * c - a * s_])

    b = build
    radius = {
        TORSO: 0.0,
        NECK: 0.032 * b,
        HEAD: head_r,
        L_EAR: 0.018,
        R_EAR: 0.018,
        L_UARM: 0.036 * b,
        R_UARM: 0.036 * b,
        L_FARM: 0.027 * b,
        R_FARM: 0.027 * b,
        L_HAND: 0.031 * b,
        R_HAND: 0.031 * b,
        L_THIGH: 0.055 * hip_build,
        R_THIGH: 0.055 * hip_build,
        L_SHIN: 0.04 * hip_build,
        R_SHIN: 0.04 * hip_build,
        L_FOOT: 0.028 * b,
        R_FOOT: 0.028 * b,
    }
    return pts, radius, head_r


# Capsule parts: (part, first point, second point)
_CAPSULES = (
    (NECK, NECK_P, HEAD_C),
    (L_UARM, L_SHO, L_ELB),
    (R_UARM, R_SHO, R_ELB),
    (L_FARM, L_ELB, L_WRI),
    (R_FARM, R_ELB, R_WRI),
    (L_HAND, L_WRI, L_HAND_END),
    (R_HAND, R_WRI, R_HAND_END),
    (L_THIGH, L_HIP, L_KNEE),
    (R_THIGH, R_HIP, R_KNEE),
    (L_SHIN, L_KNEE, L_ANK),
    (R_SHIN, R_KNEE, R_ANK),
    (L_FOOT, L_HEEL, L_TOE),
    (R_FOOT, R_HEEL, R_TOE),
)
# Depth biases (height units) for parts at equal depth: arms over the torso's edge, torso over the tops of the legs,
# the head over everything attached to it.
_DEPTH_BIAS = {
    TORSO: 0.0,
    NECK: 0.001,
    HEAD: 0.03,
    L_UARM: 0.005,
    R_UARM: 0.005,
    L_FARM: 0.006,
    R_FARM: 0.006,
    L_HAND: 0.007,
    R_HAND: 0.007,
    L_THIGH: -0.01,
    R_THIGH: -0.01,
    L_SHIN: -0.009,
    R_SHIN: -0.009,
    L_FOOT: -0.008,
    R_FOOT: -0.008,
}


def _make_person(rng: np.random.Generator, index: int, height: float, rare: str | None) -> _Person:
    """Sample pose, proportions and view; project to pixels relative to the pelvis (placed later)."""
    pose = _sample_pose(rng, rare)
    pts, radius, head_r = _build_body(rng, pose)
    r = rng.random()  # yaw: mostly front, often back, sometimes anything
    if r < 0.5:
        yaw = rng.normal(0.0, math.radians(25))
    elif r < 0.7:
        yaw = math.pi + rng.normal(0.0, math.radians(25))
    else:
        yaw = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(yaw), math.sin(yaw)
    # Camera frame: x right, y up, z toward the camera. Yaw 0 = facing the camera, the person's left on image right.
    x = pts[:, 0] * c + pts[:, 2] * s
    y = pts[:, 1]
    z = pts[:, 2] * c - pts[:, 0] * s
    roll = pose["roll"]
    cr, sr = math.cos(roll), math.sin(roll)
    xy = np.stack([cr * x + sr * y, sr * x - cr * y], axis=1) * height  # image y points down

    facing = np.ones(K, dtype=bool)
    for k, lim in _FACING_MIN.items():
        if k < K:  # cosine between the point's direction from the head centre and the view direction
            facing[k] = (z[k] - z[HEAD_C]) / (head_r * math.hypot(*_FACE_DIRS[k])) > lim
    # A shoulder / hip behind the torso's bulk (seen from the side: yaw beyond ~45 degrees) is self-occluded even
    # where the torso paints it.
    torso_z = 0.5 * (z[NECK_P] + z[PELVIS])
    torso_ok = np.zeros(K, dtype=bool)
    for a, b in ((L_SHO, R_SHO), (L_HIP, R_HIP)):
        half = 0.5 * float(np.linalg.norm(pts[a] - pts[b]))
        torso_ok[[a, b]] = z[[a, b]] >= torso_z - 0.7 * half
    px_radius = {p: v * height for p, v in radius.items()}
    person = _Person(
        index=index,
        xy=xy,
        z=z * height,
        radius=px_radius,
        head_r=head_r * height,
        head_yaw=yaw + pose["head_yaw"],
        roll=roll,
        facing=facing,
        torso_ok=torso_ok,
        box=np.zeros(4),
        height=height,
        hair_front=rng.uniform(-0.2, 0.1),
        chest_facing=float(z[CHEST_N] - z[NECK_P]),
        neckline=bool(rng.random() < 0.8),
        shirt_print=bool(rng.random() < 0.4),
        backpack=bool(rng.random() < 0.2),
        rare=rare,
    )
    person.box = _amodal_box(person)
    return person


def _amodal_box(p: _Person) -> np.ndarray:
    """x0, y0, x1, y1 of everything the person's primitives cover (capsules are exact: endpoints +- radius)."""
    lo, hi = p.xy[TORSO_CORNERS].min(axis=0), p.xy[TORSO_CORNERS].max(axis=0)
    if p.backpack:
        lo, hi = np.minimum(lo, p.xy[BACKPACK_CORNERS].min(axis=0)), np.maximum(hi, p.xy[BACKPACK_CORNERS].max(axis=0))
    for part, a, b in _CAPSULES:
        r = p.radius[part]
        lo = np.minimum(lo, np.minimum(p.xy[a], p.xy[b]) - r)
        hi = np.maximum(hi, np.maximum(p.xy[a], p.xy[b]) + r)
    hr = p.head_r * 1.3  # ears and nose stick out of the head sphere
    lo = np.minimum(lo, p.xy[HEAD_C] - hr)
    hi = np.maximum(hi, p.xy[HEAD_C] + hr)
    return np.concatenate([lo, hi])


# ------------------------------------------------------------------------------------------------------- painting


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.15, 0.9)) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(*sat), rng.uniform(0.2, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _axes(h: int, w: int, x0: float = 0.0, y0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as broadcastable float32 arrays: xs (1, w) and ys (h, 1), offset by (x0, y0)."""
    return np.arange(w, dtype=np.float32)[None, :] + x0, np.arange(h, dtype=np.float32)[:, None] + y0


def _texture(
    rng: np.random.Generator, kind: str, colour: np.ndarray, roi: tuple[int, int, int, int], height: float, roll: float
) -> np.ndarray | None:
    """A (h, w, 3) uint8 texture over ``roi`` (x0, y0, x1, y1), or None for a plain colour."""
    x0, y0, x1, y1 = roi
    h, w = y1 - y0, x1 - x0
    if kind == "stripes":
        other = np.clip(colour * rng.uniform(0.3, 0.7) + _random_colour(rng) * rng.uniform(0.0, 0.6), 0, 255)
        period = max(3.0, rng.uniform(0.03, 0.07) * height)
        angle = roll + (0.0 if rng.random() < 0.5 else math.pi / 2) + rng.normal(0.0, 0.15)
        xs, ys = _axes(h, w, x0, y0)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        on = (phase - np.floor(phase)) < 0.5
        return np.where(on[..., None], colour, other).astype(np.uint8)
    if kind == "noise":
        cell = max(2.0, rng.uniform(0.01, 0.04) * height)
        small = rng.random((max(1, int(h / cell) + 1), max(1, int(w / cell) + 1)), dtype=np.float32)
        n = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        amp = rng.uniform(25, 60)
        return np.clip(colour[None, None, :] + (n[..., None] - 0.5) * amp, 0, 255).astype(np.uint8)
    return None


def _pt(p: np.ndarray, ox: int, oy: int) -> tuple[int, int]:
    return round((float(p[0]) - ox) * _ONE), round((float(p[1]) - oy) * _ONE)


def _paint_person(
    rng: np.random.Generator, img: np.ndarray, ids: np.ndarray, p: _Person, bg_mean: np.ndarray | None
) -> None:
    """Paint person ``p`` over ``img`` (H, W, 3) and write its part codes into ``ids`` (H, W) uint16.

    Parts are rasterised into a per-person label map (outline / fill codes) in depth order, then coloured in one
    vectorised pass. ``bg_mean`` (3,) makes a low-contrast person whose colours hug the background.

    Long because the order of the random draws and of the painting is the data set; one function keeps it in view
    (the committed round's numbers depend on it).
    """
    H, W = ids.shape
    x0, y0 = max(0, math.floor(p.box[0]) - 1), max(0, math.floor(p.box[1]) - 1)
    x1, y1 = min(W, math.ceil(p.box[2]) + 2), min(H, math.ceil(p.box[3]) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    label = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)

    # Colours. The outline factor is what separates a sleeve from a torso of the same shirt.
    if bg_mean is None:
        skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3), 0, 255)
        hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 8, 3), 0, 255)
        if np.abs(hair - skin).sum() < 90:
            hair = hair * 0.5
        shirt, pants = _random_colour(rng), _random_colour(rng)
        shoes = _random_colour(rng, (0.0, 0.4)) * rng.uniform(0.3, 1.0)
        outline = rng.uniform(0.45, 0.65)
    else:

        def near(d: float) -> np.ndarray:
            return np.clip(bg_mean + rng.uniform(-d, d, 3), 0, 255)

        skin, hair, shirt, pants, shoes = near(18), near(25), near(22), near(22), near(22)
        outline = rng.uniform(0.85, 0.92)
    long_sleeves, long_pants = rng.random() < 0.5, rng.random() < 0.65
    fills = {
        TORSO: shirt,
        BACKPACK: _random_colour(rng),
        NECK: skin,
        HEAD: skin,
        L_EAR: skin * 0.9,
        R_EAR: skin * 0.9,
        L_UARM: shirt,
        R_UARM: shirt,
        L_FARM: shirt if long_sleeves else skin,
        R_FARM: shirt if long_sleeves else skin,
        L_HAND: skin,
        R_HAND: skin,
        L_THIGH: pants,
        R_THIGH: pants,
        L_SHIN: pants if long_pants else skin,
        R_SHIN: pants if long_pants else skin,
        L_FOOT: shoes,
        R_FOOT: shoes,
    }
    lut = np.zeros((64, 3), dtype=np.float64)
    for part, colour in fills.items():
        lut[2 * part + 1] = colour * outline
        lut[2 * part + 2] = colour
    lut[_HAIR] = hair
    lut[_EYE] = skin * 0.25 if bg_mean is None else skin * 0.75
    lut[_NOSE_C] = skin * 0.78
    lut[_MOUTH_C] = skin * 0.5 if bg_mean is None else skin * 0.8
    lut[_NECKLINE_C] = skin
    lut[_PRINT_C] = _random_colour(rng) if bg_mean is None else np.clip(shirt + rng.uniform(-25, 25, 3), 0, 255)
    lut = lut.astype(np.uint8)
    roi = (x0, y0, x1, y1)
    shirt_tex = _texture(
        rng, str(rng.choice(["plain", "stripes", "noise"], p=[0.5, 0.3, 0.2])), shirt, roi, p.height, p.roll
    )
    pants_tex = _texture(rng, "noise" if rng.random() < 0.3 else "plain", pants, roi, p.height, p.roll)
    ow = 0 if p.height < 45 else (1 if p.height < 260 else 2)  # outline width in pixels
    head = None

    # Painter's order: farthest part first.
    order = [(float(p.z[TORSO_CORNERS].mean()) + _DEPTH_BIAS[TORSO] * p.height, TORSO, -1, -1)]
    for part, a, b in _CAPSULES:
        order.append((0.5 * float(p.z[a] + p.z[b]) + _DEPTH_BIAS[part] * p.height, part, a, b))
    order.append((float(p.z[HEAD_C]) + _DEPTH_BIAS[HEAD] * p.height, HEAD, -1, -1))
    if p.backpack:
        order.append((float(p.z[BACKPACK_CORNERS].mean()), BACKPACK, -1, -1))
    order.sort(key=lambda item: item[0])
    for _, part, a, b in order:
        if part in (TORSO, BACKPACK):
            corners = p.xy[TORSO_CORNERS if part == TORSO else BACKPACK_CORNERS]
            hull = cv2.convexHull(np.array([_pt(q, x0, y0) for q in corners], dtype=np.int32))
            cv2.fillConvexPoly(label, hull, 2 * part + 2, cv2.LINE_8, _SHIFT)
            if ow:
                cv2.polylines(label, [hull], True, 2 * part + 1, ow, cv2.LINE_8, _SHIFT)
            if part == TORSO and p.chest_facing > 0.15:  # decals on the shirt's front, seen from the front only
                for on, sl, code in ((p.neckline, NECKLINE, _NECKLINE_C), (p.shirt_print, PRINT, _PRINT_C)):
                    if on:
                        poly = np.array([_pt(q, x0, y0) for q in p.xy[sl]], dtype=np.int32)
                        cv2.fillConvexPoly(label, poly, code, cv2.LINE_8, _SHIFT)
        elif part == HEAD:
            head = _paint_head(label, p, x0, y0)
        else:
            r = p.radius[part]
            pa, pb = _pt(p.xy[a], x0, y0), _pt(p.xy[b], x0, y0)
            cv2.line(label, pa, pb, 2 * part + 1 if ow else 2 * part + 2, max(1, round(2 * r)), cv2.LINE_8, _SHIFT)
            if ow and r - ow >= 1:
                cv2.line(label, pa, pb, 2 * part + 2, max(1, round(2 * (r - ow))), cv2.LINE_8, _SHIFT)

    # np.take and cv2.copyTo: several times faster than boolean fancy indexing on these small ROIs.
    mask = (label > 0).view(np.uint8)
    colours = np.take(lut, label, axis=0)
    for tex, sel_codes in ((shirt_tex, _SHIRT_CODES), (pants_tex, _PANTS_CODES)):
        if tex is not None:
            cv2.copyTo(tex, np.take(sel_codes, label).view(np.uint8), colours)
    if head is not None:
        shade, (hx0, hy0, hx1, hy1) = head
        sub = colours[hy0:hy1, hx0:hx1]
        sel = np.take(_HEAD_CODES, label[hy0:hy1, hx0:hx1])
        sub[sel] = (sub[sel] * shade[sel][:, None]).astype(np.uint8)
    cv2.copyTo(colours, mask, img[y0:y1, x0:x1])
    part_ids = np.take(_CODE_PART, label) + np.uint16((p.index + 1) << PART_BITS)
    cv2.copyTo(part_ids, mask, ids[y0:y1, x0:x1])


def _paint_head(label: np.ndarray, p: _Person, ox: int, oy: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Head sphere with hair and face into ``label`` (ROI origin ox, oy).

    Returns the sphere's shading (h, w) float32 and its window (x0, y0, x1, y1) in ``label``, or None when the head
    is outside the ROI.

    Each pixel's sphere normal is turned back into the head frame, so hair covers the back and the top of the head
    and the face (eyes, nose, mouth) appears only on the side that faces the camera.
    """
    h, w = label.shape
    R = p.head_r
    cx, cy = float(p.xy[HEAD_C, 0]) - ox, float(p.xy[HEAD_C, 1]) - oy
    ears = [(k, L_EAR if k == L_EAR_K else R_EAR) for k in (L_EAR_K, R_EAR_K)]
    ear_front = [(p.z[k] - p.z[HEAD_C]) / R for k, _ in ears]
    er = max(1, round(0.2 * R * _ONE))

    def ear(i: int) -> None:
        k, part = ears[i]
        q = _pt(p.xy[k], ox, oy)
        cv2.ellipse(label, q, (er, round(er * 1.5)), math.degrees(p.roll), 0, 360, 2 * part + 2, -1, cv2.LINE_8, _SHIFT)

    for i in range(2):  # ears on the far side peek out behind the head
        if _FACING_MIN[L_EAR_K] < ear_front[i] <= 0.3:
            ear(i)
    bx0, by0 = max(0, math.floor(cx - R - 1)), max(0, math.floor(cy - R - 1))
    bx1, by1 = min(w, math.ceil(cx + R + 2)), min(h, math.ceil(cy + R + 2))
    head = None
    if bx1 > bx0 and by1 > by0:
        xs, ys = _axes(by1 - by0, bx1 - bx0, bx0 - cx, by0 - cy)
        dx, dy = xs / R, ys / R
        cr, sr = math.cos(p.roll), math.sin(p.roll)
        nx = cr * dx + sr * dy  # undo the in-plane rotation: camera frame, y up
        ny = sr * dx - cr * dy
        r2 = nx * nx + ny * ny
        inside = r2 <= 1.0
        nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
        c, s = math.cos(p.head_yaw), math.sin(p.head_yaw)
        nf = nx * s + nz * c  # forward component in the head frame
        hair_front, hair_top = p.hair_front, 0.5
        hair = inside & ((nf < hair_front) | (ny > hair_top))
        sub = label[by0:by1, bx0:bx1]
        sub[inside] = 2 * HEAD + 2
        sub[hair] = _HAIR
        head = (0.55 + 0.45 * nz, (bx0, by0, bx1, by1))
    for i in range(2):  # near ears sit on the visible side of the head
        if ear_front[i] > 0.3:
            ear(i)
    if R >= 3.0:
        for k, code, size in ((L_EYE, _EYE, 0.14), (R_EYE, _EYE, 0.14), (NOSE, _NOSE_C, 0.16)):
            if p.facing[k]:
                cv2.circle(
                    label, _pt(p.xy[k], ox, oy), max(_ONE // 2, round(size * R * _ONE)), code, -1, cv2.LINE_8, _SHIFT
                )
        if (p.z[MOUTH] - p.z[HEAD_C]) / R > _FACING_MIN[MOUTH]:
            c, s = math.cos(p.head_yaw), math.sin(p.head_yaw)
            half = 0.28 * R * c  # mouth width foreshortens with the turn of the head
            ax = np.array([math.cos(p.roll), math.sin(p.roll)]) * half
            m = p.xy[MOUTH]
            cv2.line(
                label, _pt(m - ax, ox, oy), _pt(m + ax, ox, oy), _MOUTH_C, max(1, round(0.08 * R)), cv2.LINE_8, _SHIFT
            )
    return head


# ------------------------------------------------------------------------------------------------- scene assembly


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """Gradient + optional noise texture + clutter shapes (some limb-like sticks as hard negatives). (H, W, 3) uint8."""
    # Gradient and texture are smooth, so they are made at 1/4 resolution and upsampled (bilinear is exact on a
    # linear gradient): a full-resolution float image would cost more than everything else in the picture.
    h, w = H // 4 + 1, W // 4 + 1
    c0, c1 = _random_colour(rng, (0.0, 0.7)), _random_colour(rng, (0.0, 0.7))
    angle = rng.uniform(0, 2 * math.pi)
    xs, ys = _axes(h, w)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    low = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    if rng.random() < 0.5:
        cell = rng.uniform(1, 8)  # in low-resolution pixels: 4..32 image pixels
        small = rng.random((int(h / cell) + 2, int(w / cell) + 2, 3), dtype=np.float32)
        low += (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) - 0.5) * rng.uniform(10, 50)
    img = cv2.resize(np.clip(low, 0, 255).astype(np.uint8), (W, H), interpolation=cv2.INTER_LINEAR)
    s = min(H, W)
    for _ in range(int(rng.integers(2, 12))):
        colour = tuple(float(v) for v in _random_colour(rng))
        cx, cy = rng.uniform(-0.1, 1.1) * W, rng.uniform(-0.1, 1.1) * H
        size = rng.uniform(0.04, 0.35) * s
        kind = rng.random()
        if kind < 0.3:
            w_, h_ = size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0)
            box = cv2.boxPoints(((cx, cy), (w_, h_), rng.uniform(0, 180)))
            cv2.fillConvexPoly(img, np.round(box * _ONE).astype(np.int32), colour, cv2.LINE_AA, _SHIFT)
        elif kind < 0.55:
            axes = (round(size * _ONE / 2), round(size * rng.uniform(0.3, 1.0) * _ONE / 2))
            cv2.ellipse(
                img,
                (round(cx * _ONE), round(cy * _ONE)),
                axes,
                rng.uniform(0, 180),
                0,
                360,
                colour,
                -1,
                cv2.LINE_AA,
                _SHIFT,
            )
        elif kind < 0.8:
            a = rng.uniform(0, math.pi)
            d = np.array([math.cos(a), math.sin(a)]) * size
            cv2.line(
                img,
                (round((cx - d[0]) * _ONE), round((cy - d[1]) * _ONE)),
                (round((cx + d[0]) * _ONE), round((cy + d[1]) * _ONE)),
                colour,
                max(1, round(rng.uniform(0.01, 0.05) * s)),
                cv2.LINE_AA,
                _SHIFT,
            )
        else:
            poly = np.array([cx, cy]) + rng.normal(0, size / 2, (int(rng.integers(3, 7)), 2))
            hull = cv2.convexHull(np.round(poly * _ONE).astype(np.int32))
            cv2.fillConvexPoly(img, hull, colour, cv2.LINE_AA, _SHIFT)
    return img


def _paint_occluder(rng: np.random.Generator, img: np.ndarray, ids: np.ndarray, p: _Person) -> None:
    """A rectangle or ellipse in front of person ``p``, centred near one of its body parts."""
    H, W = ids.shape
    target = p.xy[int(rng.choice([NECK_P, PELVIS, L_KNEE, R_KNEE, L_ELB, R_ELB, HEAD_C, PELVIS]))]
    centre = target + rng.normal(0, 0.08 * p.height, 2)
    size = np.array([rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.75)]) * p.height
    angle = rng.uniform(0, 180) if rng.random() < 0.5 else 0.0
    mask = np.zeros((H, W), dtype=np.uint8)
    c = (round(centre[0] * _ONE), round(centre[1] * _ONE))
    if rng.random() < 0.6:
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(size[0]), float(size[1])), angle))
        cv2.fillConvexPoly(mask, np.round(box * _ONE).astype(np.int32), 1, cv2.LINE_8, _SHIFT)
    else:
        axes = (round(size[0] * _ONE / 2), round(size[1] * _ONE / 2))
        cv2.ellipse(mask, c, axes, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    colour = _random_colour(rng)
    roi = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    tex = _texture(rng, str(rng.choice(["plain", "stripes", "noise"])), colour, roi, p.height, 0.0)
    img[ys, xs] = colour.astype(np.uint8) if tex is None else tex[ys - roi[1], xs - roi[0]]
    ids[ys, xs] = OCCLUDER_VALUE


@dataclass
class Scene:
    """One rendered image with its truth.

    ``image``: (H, W, 3) uint8 RGB. ``part_map``: (H, W) uint16, what painted each pixel last: 0 background,
    ``OCCLUDER_VALUE`` an occluder, else ``(i + 1) * 32 + part`` for the person generated i-th (``PART_NAMES``);
    annotation ``id`` is ``image_id * ANNOTATION_ID_STRIDE + i``. ``annotations``: COCO dicts (dropped people absent).
    """

    image: np.ndarray
    part_map: np.ndarray
    annotations: list[dict]


def render_scene(cfg: SyntheticConfig, image_id: int) -> Scene:
    """Render image ``image_id`` (>= 1) with its part map and annotations; depends only on (cfg, image_id)."""
    rng = np.random.default_rng([cfg.seed, image_id])
    H, W = cfg.image_height, cfg.image_width
    side = min(H, W)
    img = _background(rng, H, W)
    bg = img.copy()
    ids = np.zeros((H, W), dtype=np.uint16)

    crowded = rng.random() < cfg.crowded
    n = (
        int(rng.integers(cfg.max_people + 1, 2 * cfg.max_people + 1))
        if crowded
        else int(rng.integers(1, cfg.max_people + 1))
    )
    people: list[_Person] = []
    for i in range(n):
        flags = {
            name: bool(rng.random() < getattr(cfg, name))
            for name in ("rare_pose", "small", "low_contrast", "occluded", "truncated")
        }
        if flags["small"]:
            height = rng.uniform(0.09, 0.18) * side
        elif crowded:
            height = rng.uniform(0.28, 0.55) * side
        else:
            height = rng.uniform(0.42, 0.85) * side
        rare = str(rng.choice(RARE_POSES)) if flags["rare_pose"] else None
        p = _make_person(rng, i, height, rare)
        p.flags = flags | {"crowded": crowded}
        x0, y0, x1, y1 = p.box
        bw, bh = x1 - x0, y1 - y0

        def free(lo: float, hi: float) -> float:
            return float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (lo + hi)

        # Outside crowds, keep the least overlapping of a few candidate spots: overlaps still happen, but heavy
        # mutual occlusion stays the crowd's (and the occluded case's) business.
        candidates = [(free(-x0, W - 1 - x1), free(-y0, H - 1 - y1)) for _ in range(1 if crowded else 4)]
        tx, ty = min(candidates, key=lambda t: _max_overlap(p.box + np.array([t[0], t[1], t[0], t[1]]), people))
        if flags["truncated"]:  # push a fraction of the box across one border
            f = rng.uniform(0.2, 0.55)
            edge = int(rng.integers(4))
            if edge == 0:
                tx = -x0 - f * bw
            elif edge == 1:
                tx = W - 1 - x1 + f * bw
            elif edge == 2:
                ty = -y0 - f * bh
            else:
                ty = H - 1 - y1 + f * bh
        p.xy = p.xy + np.array([tx, ty])
        p.box = p.box + np.array([tx, ty, tx, ty])
        people.append(p)

    # Far (small) people first, with jitter so that similar sizes overlap either way.
    depth_key = [p.height * rng.uniform(0.8, 1.2) for p in people]
    for j in np.argsort(depth_key, kind="stable"):
        p = people[j]
        bg_mean = None
        if p.flags["low_contrast"]:
            bx0, by0 = max(0, int(p.box[0])), max(0, int(p.box[1]))
            bx1, by1 = min(W, int(p.box[2]) + 1), min(H, int(p.box[3]) + 1)
            region = bg[by0:by1, bx0:bx1] if bx1 > bx0 and by1 > by0 else bg
            bg_mean = region.reshape(-1, 3).mean(axis=0)
        _paint_person(rng, img, ids, p, bg_mean)
    for p in people:
        if p.flags["occluded"]:
            _paint_occluder(rng, img, ids, p)

    if rng.random() < cfg.blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.7, 1.8))
    if rng.random() < cfg.noise:
        img = _add_noise(rng, img, rng.uniform(3, 12))

    return Scene(image=img, part_map=ids, annotations=_annotate(people, ids, image_id))


_NB = np.array([(0, 0)] + [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])  # 3x3, centre first


@lru_cache(maxsize=32)
def _noise_luts(sigma_tenths: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 -> positive / negative part of a Gaussian quantile (sigma / 10 grey levels), as two (256,) uint8 LUTs."""
    dist = NormalDist(0.0, sigma_tenths / 10)
    q = np.array([dist.inv_cdf((i + 0.5) / 256) for i in range(256)])
    q = np.clip(np.round(q), -255, 255)
    return np.maximum(q, 0).astype(np.uint8), np.maximum(-q, 0).astype(np.uint8)


def _add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian pixel noise with saturation, through uint8 LUTs: ~8x faster than float normals at 256x256."""
    u = np.frombuffer(rng.bytes(img.size), dtype=np.uint8).reshape(img.shape)
    pos, neg = _noise_luts(round(sigma * 10))
    return cv2.subtract(cv2.add(img, cv2.LUT(u, pos)), cv2.LUT(u, neg))


def _max_overlap(box: np.ndarray, people: list[_Person]) -> float:
    """Largest fraction of ``box`` (x0, y0, x1, y1) covered by the box of any person in ``people``."""
    best = 0.0
    area = max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))
    for q in people:
        w = min(box[2], q.box[2]) - max(box[0], q.box[0])
        h = min(box[3], q.box[3]) - max(box[1], q.box[1])
        if w > 0 and h > 0:
            best = max(best, w * h / area)
    return best


def _annotate(people: list[_Person], ids: np.ndarray, image_id: int) -> list[dict]:
    """COCO annotations from what was actually painted into ``ids`` (H, W)."""
    H, W = ids.shape
    area = np.bincount((ids >> PART_BITS).ravel(), minlength=len(people) + 2)
    anns = []
    for p in people:
        xy = p.xy[:K]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= W - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= H - 1)
        col = np.clip(np.floor(xy[:, 0] + 0.5).astype(np.int64), 0, W - 1)
        row = np.clip(np.floor(xy[:, 1] + 0.5).astype(np.int64), 0, H - 1)
        base = (p.index + 1) << PART_BITS
        # The pixel under the keypoint decides; where it is background (a 1-2 px limb of a small person can miss the
        # pixel centre) its 3x3 neighbourhood does.
        patch = ids[np.clip(row[:, None] + _NB[:, 0], 0, H - 1), np.clip(col[:, None] + _NB[:, 1], 0, W - 1)]
        patch = patch.astype(np.int64)  # (K, 9), the centre first
        part = patch - base
        ok = (part >= 0) & (part < (1 << PART_BITS))
        ok &= _ALLOWED[np.arange(K)[:, None], np.clip(part, 0, 31)] | (p.torso_ok[:, None] & (part == TORSO))
        seen = ok[:, 0] | ((patch[:, 0] == 0) & ok[:, 1:].any(axis=1))
        v = np.where(inside, np.where(seen & p.facing, 2, 1), 0)
        # Occluded by something else (an occluder, another person), as opposed to self-occlusion.
        covered = (
            inside
            & (v == 1)
            & ((patch[:, 0] == OCCLUDER_VALUE) | ((patch[:, 0] > 0) & ((patch[:, 0] >> PART_BITS) != p.index + 1)))
        )
        labeled = int((v > 0).sum())
        # Rounded before differencing so that x + w stays <= W - 1 exactly.
        bx0, by0 = round(max(float(p.box[0]), 0.0), 3), round(max(float(p.box[1]), 0.0), 3)
        bw = round(round(min(float(p.box[2]), W - 1.0), 3) - bx0, 3)
        bh = round(round(min(float(p.box[3]), H - 1.0), 3) - by0, 3)
        visible_px = int(area[p.index + 1]) if p.index + 1 < len(area) else 0
        if labeled < 3 or int((v == 2).sum()) < 2 or bw < 8 or bh < 8 or visible_px < 20:
            continue
        kps = np.where(v[:, None] > 0, np.round(xy, 3), 0.0)
        tags = [
            name
            for name, on in (
                ("occluded", covered.sum() >= OCCLUDED_FRACTION * labeled),
                ("rare_pose", p.rare is not None),
                ("small", max(p.box[2] - p.box[0], p.box[3] - p.box[1]) < SMALL_FRACTION * min(H, W)),
                ("low_contrast", p.flags["low_contrast"]),
                ("crowded", p.flags["crowded"]),
                ("truncated", bool((v == 0).any())),
            )
            if on
        ]
        anns.append(
            {
                "id": image_id * ANNOTATION_ID_STRIDE + p.index,
                "image_id": image_id,
                "category_id": 1,
                "keypoints": [c for (x, y), vis in zip(kps.tolist(), v.tolist(), strict=True) for c in (x, y, vis)],
                "num_keypoints": labeled,
                "bbox": [bx0, by0, bw, bh],
                "area": float(visible_px),
                "iscrowd": 0,
                "synthetic_tags": tags,
            }
        )
    anns.sort(key=lambda a: a["id"])
    return anns


# ---------------------------------------------------------------------------------------------------- public API


def render_image(cfg: SyntheticConfig, image_id: int) -> tuple[np.ndarray, list[dict]]:
    """RGB uint8 (H, W, 3) image and its COCO annotations, ids filled (``image_id * 100 + person index``)."""
    scene = render_scene(cfg, image_id)
    return scene.image, scene.annotations


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG (quality 92) bytes of an RGB (H, W, 3) uint8 image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def coco_category() -> dict:
    """The COCO person category with the 17 keypoint names and the 1-based skeleton."""
    return KeypointSchema.coco17().to_coco_category()


def generate_dataset(out_dir: Path, cfg: SyntheticConfig, image_subdir: str = "images", progress: bool = True) -> dict:
    """Write ``out_dir/image_subdir/{image_id:06d}.jpg`` for image ids 1..num_images and return the COCO dict.

    ``file_name`` is relative to ``out_dir`` (``images/000001.jpg``). The dict is not written to disk here.
    """
    out_dir = Path(out_dir)
    (out_dir / image_subdir).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ids = range(1, cfg.num_images + 1)
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="synthetic images", unit="img")
    for image_id in ids:
        image, anns = render_image(cfg, image_id)
        name = f"{image_subdir}/{image_id:06d}.jpg"
        (out_dir / name).write_bytes(encode_jpeg(image))
        images.append({"id": image_id, "file_name": name, "width": cfg.image_width, "height": cfg.image_height})
        annotations.extend(anns)
    return {
        "info": {
            "description": "poseloop synthetic people (pipeline.data.synthetic)",
            "version": str(GENERATOR_VERSION),
            "synthetic_config": asdict(cfg),
        },
        "images": images,
        "annotations": annotations,
        "categories": [coco_category()],
    }


# ----------------------------------------------------------------------------------------------- quick look (CLI)


def synthetic_command(out: Path, num_images: int, seed: int, width: int, height: int, sheet: bool) -> int:
    """``python -m pipeline synthetic``: write a small synthetic data set (images/ and annotations.json) to look at."""
    cfg = SyntheticConfig(num_images=num_images, seed=seed, image_width=width, image_height=height)
    start = time.perf_counter()
    coco = generate_dataset(out, cfg)
    seconds = time.perf_counter() - start
    (out / "annotations.json").write_text(json.dumps(coco))
    print(f"{cfg.num_images} images, {len(coco['annotations'])} people in {seconds:.2f} s -> {out}")
    if sheet:
        from pipeline.viz import preview_command

        preview_command(out / "annotations.json", out, out / "sheet.png", num=16, columns=4)
    return 0
