"""KeypointSchema: names, skeleton, flip pairs and sigmas come from the data, never assume 17 keypoints."""

import numpy as np
import pytest

from pipeline.keypoints import COCO_SIGMAS, KeypointSchema


def test_coco17_schema():
    schema = KeypointSchema.coco17()
    assert schema.num_keypoints == 17
    assert schema.sigma_source == "coco"
    assert schema.sigmas[0] == pytest.approx(0.026)
    assert (1, 2) in schema.flip_pairs and (15, 16) in schema.flip_pairs and len(schema.flip_pairs) == 8
    perm = schema.flip_index
    assert perm[1] == 2 and perm[2] == 1 and perm[0] == 0
    assert np.array_equal(perm[perm], np.arange(17))  # an involution
    assert KeypointSchema.from_coco_category(schema.to_coco_category()) == schema


def test_four_keypoint_animal_schema_defaults_and_params():
    cat = {"id": 3, "name": "mouse", "keypoints": ["snout", "leftear", "rightear", "tailbase"], "skeleton": [[1, 2]]}
    schema = KeypointSchema.from_coco_category(cat)
    assert schema.num_keypoints == 4
    assert schema.flip_pairs == ((1, 2),)
    assert schema.sigma_source == "default" and schema.sigmas == (0.1,) * 4
    assert schema.skeleton == ((0, 1),)
    custom = KeypointSchema.from_coco_category(cat, sigmas=[0.05, 0.08, 0.08, 0.1], flip_pairs=[])
    assert custom.sigma_source == "params" and custom.flip_pairs == ()
    assert KeypointSchema.from_json(custom.to_json()) == custom


def test_reordered_coco_names_get_their_own_sigmas():
    cat = {"id": 1, "name": "person", "keypoints": ["left_hip", "nose"]}
    schema = KeypointSchema.from_coco_category(cat)
    assert schema.sigmas == (COCO_SIGMAS["left_hip"], COCO_SIGMAS["nose"])


@pytest.mark.parametrize(
    ("category", "kwargs", "message"),
    [
        ({"id": 1, "name": "person"}, {}, "no 'keypoints'"),
        ({"id": 1, "keypoints": ["a", "a"]}, {}, "not unique"),
        ({"id": 1, "keypoints": ["a", "b"]}, {"sigmas": [0.1]}, "1 OKS sigmas for 2 keypoints"),
        ({"id": 1, "keypoints": ["a", "b"], "skeleton": [[1, 3]]}, {}, "outside 0..1"),
        ({"id": 1, "keypoints": ["a", "b"]}, {"sigmas": [0.1, 0.0]}, "must be > 0"),
    ],
)
def test_bad_schemas_fail_clearly(category, kwargs, message):
    with pytest.raises(ValueError, match=message):
        KeypointSchema.from_coco_category(category, **kwargs)
