"""Annotator effort: keypoints moved, added and deleted against the pre-annotation the annotator started from, counted
the same way for the simulated annotator and for a person (issue #14, item 1). Against a real Label Studio:
tests/integration/test_effort_in_label_studio.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labelstudio.annotations import keypoint_effort
from pipeline.keypoints import KeypointSchema

COCO17 = KeypointSchema.coco17()
K = 17


def _final(xy: np.ndarray, vis: np.ndarray) -> list[float]:
    return np.c_[xy, vis].ravel().tolist()


def test_a_perfect_pre_annotation_costs_nothing_and_one_with_every_point_off_costs_k():
    rng = np.random.default_rng(0)
    xy = rng.uniform(10, 190, (K, 2))
    vis = np.full(K, 2)
    box = [0.0, 0.0, 200.0, 200.0]
    exact = {name: tuple(xy[j]) for j, name in enumerate(COCO17.names)}
    assert keypoint_effort(exact, _final(xy, vis), box, COCO17) == (0, 0, 0)
    jitter = {name: (x + 0.5, y - 0.5) for name, (x, y) in exact.items()}  # hand-jitter is not a move
    assert keypoint_effort(jitter, _final(xy, vis), box, COCO17) == (0, 0, 0)
    off = {name: (x + 60.0, y + 60.0) for name, (x, y) in exact.items()}
    assert keypoint_effort(off, _final(xy, vis), box, COCO17) == (K, 0, 0)
    # two points not pre-placed but labeled (added), one pre-placed but not labeled (deleted)
    partial = dict(exact)
    partial.pop("nose")
    partial.pop("left_eye")
    vis_hidden = vis.copy()
    vis_hidden[COCO17.names.index("right_ankle")] = 0
    assert keypoint_effort(partial, _final(xy, vis_hidden), box, COCO17) == (0, 2, 1)


def test_the_tolerance_is_a_per_keypoint_oks_so_it_scales_with_the_person():
    xy, vis = np.full((K, 2), 100.0), np.full(K, 2)
    moved_by = {name: (106.0, 100.0) for name in COCO17.names}  # 6 px
    small, large = [90.0, 90.0, 20.0, 20.0], [0.0, 0.0, 400.0, 400.0]
    assert keypoint_effort(moved_by, _final(xy, vis), small, COCO17)[0] == K  # 6 px on a 20 px person: a move
    assert keypoint_effort(moved_by, _final(xy, vis), large, COCO17)[0] == 0  # on a 400 px person: noise


@pytest.mark.parametrize("field", ["moved_keypoints", "added_keypoints", "deleted_keypoints"])
def test_effort_fields_round_trip_through_the_store(tmp_path, field):
    from pipeline.corrections import Correction, read_store, write_pull

    c = Correction(
        1,
        1,
        (1.0, 2.0, 3.0, 4.0),
        tuple([1.0, 2.0, 2] * K),
        5,
        6,
        None,
        "2026-12-01T00:00:00Z",
        None,
        moved_keypoints=3,
        added_keypoints=1,
        deleted_keypoints=2,
    )
    write_pull(tmp_path, [c], [], [], "test")
    [back] = read_store(tmp_path)[0]
    assert getattr(back, field) == getattr(c, field)
