"""Shared test fixtures. Real COCO / DeepLabCut data lives in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POSELOOP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of ../shared/data/<name>; skips the test with a clear message when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real test data {path} is absent (set POSELOOP_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture
def coco_mini() -> Path:
    return shared_dataset("coco_mini")


@pytest.fixture
def coco_val4() -> Path:
    return shared_dataset("coco_val4")


@pytest.fixture
def dlc_openfield() -> Path:
    return shared_dataset("dlc_openfield")


@pytest.fixture
def one_torch_thread():
    """Run small-tensor tests on one torch thread: on 2 shared cores, thread hand-offs made tiny convolutions up to
    100x slower (measured: an HRNet test forward went from 0.05 s to 30 s while another job ran)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory):
    """One real Label Studio server for the whole session (first start ~30 s), in a tmp folder, on a free port.

    Yields ``tests.labelstudio_server.SessionServer`` (``server``, ``url``, ``token``, ``document_root``,
    ``image_root``). Skips, loudly, when label-studio cannot be imported. Tests share it: use your own project title.
    """
    from tests.labelstudio_server import start_session_server

    session = start_session_server(tmp_path_factory.mktemp("labelstudio"))
    yield session
    session.server.stop()


@pytest.fixture
def labelstudio_env(labelstudio, monkeypatch):
    """The session server with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY set for this test (what connect() reads)."""
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    return labelstudio


# Tests that start a real Label Studio (the session's server costs ~30 s to start, each test a few seconds) belong to
# the slow tier whatever their module: `make test-fast` (-m "not slow") leaves them out, `make test` runs them.
SERVER_FIXTURES = {"labelstudio", "labelstudio_env"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
