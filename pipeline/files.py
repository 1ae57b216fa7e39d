"""Writing and hashing files: the one way the project writes a file that someone may read while it is written.

Every output is written to a unique temp file beside it (or in ``temp_dir``, same file system) and then renamed into
place, so a reader (DVC, a second stage, a person) sees the old file or the new one, never half of one, and a killed
writer leaves the old file intact. Two modes:

* ``atomic_write(path, data)``: replace whatever is there (stage outputs, metrics, tasks).
* ``atomic_write(path, data, create_only=True)``: never replace: the append-only corrections store, where an existing
  name is human work. ``os.link`` fails when the name exists, even if another writer creates it between a check and
  the rename (``os.replace`` would silently overwrite).

Low level on purpose (standard library only): models/, pipeline/ and stages/ all use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """A JSON file that cannot be read as JSON; the message names the file and why (one line, no traceback)."""


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file from outside the project (a data set, an inbox export, predictions, a store file).

    Raises ``JsonFileError`` naming the file for what is not a readable JSON file: a folder (a directory named
    ``*.json``), invalid JSON (line and column), text that is not UTF-8, nesting deeper than Python's parser
    recurses (a file of 10^6 ``[``). A missing file raises FileNotFoundError as usual. Python's json accepts NaN /
    Infinity literals, so validators see them and report them by record.
    """
    file = Path(path)
    if file.is_dir():
        raise JsonFileError(f"{file}: is a folder, not a JSON file")
    raw = file.read_bytes()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JsonFileError(f"{file}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"{file}: not UTF-8 text: {exc}") from None
    except RecursionError:
        raise JsonFileError(f"{file}: JSON nested too deeply to read (over ~1000 levels of [ or {{)") from None


def file_md5(path: Path) -> str:
    """Hex md5 of a file's bytes, read in 1 MiB chunks (weights files are hundreds of MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; not possible on every platform / file system, not needed to be correct."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_name(path: Path, temp_dir: Path | None) -> Path:
    return (temp_dir or path.parent) / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def atomic_write(
    path: Path, data: bytes | str, *, create_only: bool = False, durable: bool = False, temp_dir: Path | None = None
) -> Path:
    """Write ``data`` (str: UTF-8, ``\\n`` line ends) to ``path`` through a temp file; returns ``path``.

    ``create_only``: raise FileExistsError instead of replacing an existing file. ``durable``: fsync the file and
    the folder (what must survive a power cut: human corrections, the COCO files people hand-edit). ``temp_dir``:
    where the temp file lives when not beside ``path`` (a folder DVC does not cache); on another file system than
    ``path`` it falls back to beside it, since a rename cannot cross file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if create_only and path.exists():
        raise FileExistsError(f"{path}: exists already; refusing to overwrite it")
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        if os.stat(temp_dir).st_dev != os.stat(path.parent).st_dev:
            temp_dir = None
    tmp = _temp_name(path, temp_dir)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # O_EXCL on a unique name: two writers never share a temp file; mode 0o666 honours the umask like open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if not create_only:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: created by another writer meanwhile; not overwriting it") from None
            except OSError:
                # no hard links on this file system: the checked rename (only a writer of the same name in the same
                # instant could slip in between)
                if path.exists():
                    raise FileExistsError(f"{path}: exists already; refusing to overwrite it") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if durable:
        fsync_dir(path.parent)
    return path


def write_json(path: Path, data: Any, *, indent: int | None = 1) -> Path:
    """``data`` as JSON (sorted keys, a trailing newline) through ``atomic_write``: metrics and stage records."""
    return atomic_write(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_path(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """For writers that need a file name (``pq.write_table``, matplotlib): yields a temp path beside ``path`` and
    renames it into place when the block ends without an exception; otherwise removes it. ``keep_suffix``: the temp
    name ends in ``path``'s suffix, for writers that choose the format by it (sleap-io)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, None)
    if keep_suffix:
        tmp = tmp.with_name(tmp.name + path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
