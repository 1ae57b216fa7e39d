"""What ``prepare`` reads from outside git and DVC, as one small file DVC can watch (stage ``inputs``).

A source's files and ``data.pool``'s images and videos live where the team keeps them, so ``dvc.yaml`` cannot name
them as dependencies: a video dropped into a pool folder would not make ``dvc repro`` prepare the data again. The
``inputs`` stage runs every time (``always_changed``) and writes ``data/inputs.json``: every such file with its size
and modification time (``make``'s test, not a content hash: hashing a pool of videos at every run would cost
minutes). ``prepare`` depends on that file, so it runs again exactly when a file was added, removed, replaced or
touched, and ``dvc.lock`` records which inputs a round was made from.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DataParams
from pipeline.data.unlabeled import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_inputs

# the params of each source that name files or folders (the synthetic source reads nothing); of an image folder
# (IMAGE_FOLDERS) only the images count, so a folder that also holds other files (Label Studio's document root may be
# the project's data/) does not make prepare run at every repro
IMAGE_FOLDERS = frozenset({"images", "val_images"})
SOURCE_PATHS = {
    "coco": ("annotations", "images", "val_annotations", "val_images"),
    "deeplabcut": ("project",),
    "lightning_pose": ("project",),
    "mpii": ("annotations", "images"),
    "sleap": ("labels",),
    "labelstudio": ("export", "images"),
}


def input_files(data: DataParams, project_root: Path) -> list[Path]:
    """Every file ``prepare`` may read outside the project's tracked files: the source's files and folders
    (recursively, hidden ones left out) and the pool's images and videos; sorted, each once. A source path that
    does not exist is left to ``prepare``, which names it in its error; a ``data.pool`` entry that names nothing
    raises ``PoolInputError`` naming it. What the stages write (``data/prepared``, ``data/inputs.json``,
    ``artifacts``) is never listed, even under a source folder such as the project's ``data/``, or prepare would
    run at every repro."""
    written = [(project_root / p).resolve() for p in ("data/prepared", "data/inputs.json", "artifacts")]

    def ours(path: Path) -> bool:
        path = path.resolve()
        return any(path == w or w in path.parents for w in written)

    found: set[Path] = set()
    source = getattr(data, data.source, None)
    for key in SOURCE_PATHS.get(data.source, ()):
        value = getattr(source, key)
        if not value:
            continue
        path = Path(value) if Path(value).is_absolute() else project_root / value
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            found.update(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (key not in IMAGE_FOLDERS or p.suffix.lower() in IMAGE_SUFFIXES)
            )
    found.update(list_inputs(data.pool.images, IMAGE_SUFFIXES, project_root, "images"))
    found.update(list_inputs(data.pool.videos, VIDEO_SUFFIXES, project_root, "videos"))
    return sorted(p for p in found if not ours(p))


def fingerprint(files: list[Path], project_root: Path) -> dict:
    """``{"files": {path: [size in bytes, modification time in ns]}}``; paths under the project relative to it."""
    out = {}
    for path in files:
        stat = path.stat()
        try:
            name = path.resolve().relative_to(project_root.resolve()).as_posix()
        except ValueError:
            name = path.resolve().as_posix()
        out[name] = [stat.st_size, stat.st_mtime_ns]
    return {"files": dict(sorted(out.items()))}
