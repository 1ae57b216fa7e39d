"""Untrusted servers stay contained (issue #15, items 8-10): a local Ray and Label Studio are this user's only,
annotators get images and nothing else. Each test reproduces a case that got through before. Paths from data files
and checkpoints (items 7 and 11) are tested in tests/unit/test_untrusted.py."""

from __future__ import annotations

import ipaddress
import stat
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from pipeline.keypoints import KeypointSchema

COCO17 = KeypointSchema.coco17()


# ----------------------------------------------------------------------------------- 8: local Ray on loopback only


def test_local_ray_listens_on_the_loopback_address_only(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import ray

    from pipeline.ray_cluster import ray_session

    with ray_session(num_cpus=1, stage="test-ray-bind"):
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker process is up too
        listening = []
        for proc in psutil.Process().children(recursive=True):
            try:
                connections = proc.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            listening += [
                (proc.name(), c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN
            ]
    assert listening, "found no listening socket of Ray's processes: the check would prove nothing"
    assert all(_loopback(ip) for _, ip, _ in listening), listening  # was '::' (every interface) before


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # '::ffff:127.0.0.1': a dual-stack socket bound to 127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


# -------------------------------------------------------------------------------- 9, 10: Label Studio, contained


def test_label_studio_data_folder_is_private(labelstudio):
    data_dir = Path(labelstudio.server.data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite3" for p in files)
    open_to_others = [(str(p), oct(stat.S_IMODE(p.stat().st_mode))) for p in files if p.stat().st_mode & 0o077]
    assert open_to_others == []  # the database held the token at 0644 in a 0755 folder


def test_annotators_get_images_and_never_the_label_files(labelstudio_env):
    from pipeline.data.labelstudio import tasks as task_format
    from pipeline.labelstudio import client
    from tests.support.labelstudio_server import write_images

    ls = client.connect()
    prepared = labelstudio_env.image_root  # <document root>/prepared, as data/prepared
    images = write_images(prepared, "contained", [(32, 32)])
    (prepared / "oracle.json").write_text('{"hidden": "truth"}')
    (prepared / "test.json").write_text('{"hidden": "test labels"}')
    # a project made by an older poseloop: its storage covered all of data/prepared
    pid = client.get_or_create_project(ls, "contained check", COCO17, labelstudio_env.document_root)
    ls.import_storage.local.create(project=pid, path=str(prepared), title=client.STORAGE_TITLE, use_blob_urls=True)
    assert client.get_or_create_project(ls, "contained check", COCO17, labelstudio_env.document_root) == pid
    paths = [Path(s.path).resolve() for s in ls.import_storage.local.list(project=pid)]
    assert paths == [(prepared / "images").resolve()]

    def get(relative: str) -> int:
        request = urllib.request.Request(
            labelstudio_env.url + task_format.image_url(relative),
            headers={"Authorization": f"Token {labelstudio_env.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get(f"prepared/{images[0]['file_name']}") == 200
    assert get("prepared/oracle.json") in (403, 404)  # was 200: the hidden truth, to anyone logged in
    assert get("prepared/test.json") in (403, 404)
