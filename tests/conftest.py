"""Shared test fixtures, and the two tiers. Real COCO / DeepLabCut data lives in ../shared/data (never copied into the
repo).

The directory is the tier: tests/unit/ is the fast tier (`make test-fast`: no server, no Ray cluster, no long
training), tests/integration/ the slow one (Label Studio servers, Ray clusters, stages run as subprocesses, trainings).
Every test under tests/integration/ is marked ``slow`` here, so ``-m slow`` / ``-m "not slow"`` still select the tiers;
collection fails when a test under tests/unit/ is marked slow or starts a server, or a test lives in neither folder.
Helpers both tiers import are in tests/support/."""

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

    Yields ``tests.support.labelstudio_server.SessionServer`` (``server``, ``url``, ``token``, ``document_root``,
    ``image_root``). Skips, loudly, when label-studio cannot be imported. Tests share it: use your own project title.
    """
    from tests.support.labelstudio_server import start_session_server

    session = start_session_server(tmp_path_factory.mktemp("labelstudio"))
    yield session
    session.server.stop()


@pytest.fixture
def labelstudio_env(labelstudio, monkeypatch):
    """The session server with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY set for this test (what connect() reads)."""
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    return labelstudio


TESTS = Path(__file__).resolve().parent
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"
# A test that starts a real Label Studio (the session's server costs ~30 s to start, each test a few seconds) belongs
# to tests/integration/ whatever it tests.
SERVER_FIXTURES = {"labelstudio", "labelstudio_env"}


def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        path = Path(item.path).resolve()
        if path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.slow)
        elif path.is_relative_to(UNIT):
            servers = sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
            if item.get_closest_marker("slow") is not None:
                misplaced.append(f"{item.nodeid}: marked slow")
            if servers:
                misplaced.append(f"{item.nodeid}: uses the Label Studio server fixture {', '.join(servers)}")
        elif path.is_relative_to(TESTS):
            misplaced.append(f"{item.nodeid}: in neither tests/unit/ nor tests/integration/")
    if misplaced:
        raise pytest.UsageError(
            "tests in the wrong tier (tests/unit/ is the fast tier: nothing slow, no server; a slow test or one that "
            "starts a server goes to tests/integration/, which marks it slow):\n  " + "\n  ".join(misplaced)
        )
