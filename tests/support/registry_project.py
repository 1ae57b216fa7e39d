"""What the registry tests of both tiers share (tests/unit/test_registry.py, tests/integration/test_registry_stages.py):
the registered model's name and a small project with an untrained model to register."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.teacher import make_project, small_params, untrained_teacher

NAME = "poseloop-pose"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    raw = small_params()
    root = make_project(tmp_path_factory.mktemp("registry"), raw)
    untrained_teacher(root, raw, root / "artifacts" / "model")
    return root
