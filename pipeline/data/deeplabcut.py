"""Convert a single-animal DeepLabCut project into COCO keypoints (docs/DESIGN.md section 1: "DeepLabCut-style project
converted to COCO"), so the rest of the loop only ever sees COCO.

What is read: ``config.yaml`` (``bodyparts``, ``scorer``, ``skeleton``) and every
``labeled-data/*/CollectedData_*.csv``: three header rows (scorer / bodyparts / coords), then one row per labeled frame,
whose index is the image path relative to the project, either in one column (``labeled-data/m4s1/img0000.png``, DLC
2.0/2.1) or split over three (``labeled-data,m4s1,img0000.png``, DLC >= 2.2). Both are handled, as are Windows
backslashes in old paths. The ``.h5`` twin of each CSV is not read here; the writer checks it against the CSV
(``read_label_h5``: numbers only, never unpickled).

Conversion, per CSV row: one image and one annotation.

* keypoints in pixels as stored by DeepLabCut (no half-pixel shift: both DLC and our codecs put pixel centres on integer
  coordinates); a labeled bodypart gets visibility 2, an empty / NaN cell visibility 0 at (0, 0). DLC has no
  "occluded but labeled" flag, so visibility 1 never appears.
* box: the labeled keypoints' extent, grown on every side by ``margin`` times its longer side, but by at least
  ``min_pad`` pixels (so a single labeled point still gets a box), then clipped to the image. Four points on a mouse
  (snout, ears, tail base) do not span the body, hence a margin relative to the longer side rather than per axis.
* ``area`` = box area: there are no segmentation masks, and OKS only needs an object scale.
* a row with no labeled bodypart at all gives an image without annotation (a valid "nothing to label here" frame).
* width / height are read from the image file header; ``file_name`` is relative to the project folder.
* ids: images sorted by path get ids 1..N; annotation ids equal their image's id (one animal per frame).

Multi-animal projects (``multianimalproject: true``, or an ``individuals`` header row) raise ``NotImplementedError``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml
from PIL import Image

from pipeline.data.coco import box_around, keypoint_annotation

log = logging.getLogger(__name__)


class DeepLabCutFormatError(ValueError):
    """A DeepLabCut project cannot be converted; the message names the file (and CSV line) at fault."""


@dataclass(frozen=True)
class _Row:
    csv_path: Path
    line: int  # 1-based line in the CSV, as an editor shows it
    image: str  # posix path relative to the project folder
    xy: tuple[tuple[float, float] | None, ...]  # per config bodypart; None = unlabeled


def read_deeplabcut_project(
    project_dir: str | os.PathLike[str],
    margin: float = 0.1,
    min_pad: float = 8.0,
    category_name: str = "animal",
) -> tuple[dict, Path]:
    """Read a single-animal DeepLabCut project as a COCO keypoint dict; returns (coco dict, project folder), the
    folder being what the images' ``file_name`` is relative to.

    ``margin``: box padding as a fraction of the longer side of the keypoints' extent, on every side.
    ``min_pad``: the least padding in pixels. Errors (``DeepLabCutFormatError``, a ValueError) name the file and line.
    """
    if margin < 0 or min_pad < 0:
        raise ValueError(f"margin and min_pad must be >= 0, got {margin}, {min_pad}")
    project = Path(project_dir)
    config_path = project / "config.yaml"
    config = _read_config(config_path)
    bodyparts: list[str] = config["bodyparts"]
    skeleton = _skeleton_indices(config.get("skeleton"), bodyparts, config_path)

    csvs = sorted(project.glob("labeled-data/*/CollectedData_*.csv"))
    if not csvs:
        raise DeepLabCutFormatError(
            f"{project}: no labeled-data/*/CollectedData_*.csv (a project with only .h5 label files is not supported)"
        )
    rows: dict[str, _Row] = {}
    for csv_path in csvs:
        for row in _read_csv(csv_path, bodyparts, project):
            if row.image in rows:
                first = rows[row.image]
                raise DeepLabCutFormatError(
                    f"{row.csv_path}: line {row.line}: image {row.image} is already labeled in "
                    f"{first.csv_path} line {first.line}"
                )
            rows[row.image] = row

    info = {
        "description": f"DeepLabCut project {config.get('Task', project.name)!s} converted to COCO by poseloop",
        "dlc_scorer": str(config.get("scorer", "")),
        "dlc_csv_files": [p.relative_to(project).as_posix() for p in csvs],
    }
    return _to_coco(rows, project, bodyparts, skeleton, info, margin, min_pad, category_name), project


def read_lightning_pose_project(
    project_dir: str | os.PathLike[str],
    margin: float = 0.1,
    min_pad: float = 8.0,
    category_name: str = "animal",
) -> tuple[dict, Path]:
    """Read a Lightning Pose project as a COCO keypoint dict; returns (coco dict, project folder).

    Lightning Pose keeps DeepLabCut's label file layout without DeepLabCut's project around it: one
    ``CollectedData.csv`` at the project's top (three header rows scorer / bodyparts / coords; the index is the image
    path relative to the project, e.g. ``labeled-data/session0/img01.png``), a ``videos/`` folder, no config.yaml.
    The keypoint names are the CSV's bodyparts, in column order; there is no skeleton. Rows become images and
    annotations exactly as a DeepLabCut project's do (module doc). Its videos become the pool through
    ``data.pool.videos`` (README, "Your own unlabeled images and videos").
    """
    project = Path(project_dir)
    csv_path = project / LIGHTNING_POSE_CSV
    if not csv_path.is_file():
        raise DeepLabCutFormatError(f"{project}: no {LIGHTNING_POSE_CSV} (not a Lightning Pose project?)")
    bodyparts = _csv_bodyparts(csv_path)
    rows: dict[str, _Row] = {}
    for row in _read_csv(csv_path, bodyparts, project):
        if row.image in rows:
            raise DeepLabCutFormatError(
                f"{csv_path}: line {row.line}: image {row.image} is already labeled on line {rows[row.image].line}"
            )
        rows[row.image] = row
    info = {"description": f"Lightning Pose project {project.name} converted to COCO by poseloop"}
    return _to_coco(rows, project, bodyparts, [], info, margin, min_pad, category_name), project


LIGHTNING_POSE_CSV = "CollectedData.csv"


def _csv_bodyparts(path: Path) -> list[str]:
    """The bodyparts of a DeepLabCut-layout CSV's second header row, in column order (each once)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [row for _, row in zip(range(3), csv.reader(f), strict=False)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DeepLabCutFormatError(f"{path}: cannot read: {exc}") from exc
    if len(header) < 3 or not header[1] or header[1][0].strip() != "bodyparts":
        raise DeepLabCutFormatError(f"{path}: line 2 must start with 'bodyparts' (DeepLabCut's three header rows)")
    n_index = _index_width(header[2])
    parts = list(dict.fromkeys(p.strip() for p in header[1][n_index:] if p.strip()))
    if not parts:
        raise DeepLabCutFormatError(f"{path}: line 2 names no bodypart")
    return parts


def _to_coco(
    rows: dict[str, _Row],
    project: Path,
    bodyparts: list[str],
    skeleton: list[tuple[int, int]],
    info: dict,
    margin: float,
    min_pad: float,
    category_name: str,
) -> dict:
    """Labeled rows (image path -> row) -> one COCO dict: images sorted by path with ids 1..N, one annotation per
    image with a labeled bodypart, its id the image's."""
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, name in enumerate(sorted(rows), start=1):
        row = rows[name]
        width, height = _image_size(project / name, row)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        labeled = [p for p in row.xy if p is not None]
        if not labeled:
            continue
        keypoints: list[float] = []
        for p in row.xy:
            keypoints += [p[0], p[1], 2] if p is not None else [0, 0, 0]
        bbox = _box(labeled, width, height, margin, min_pad, row)
        annotations.append(keypoint_annotation(image_id, image_id, keypoints, bbox))
    category = {
        "id": 1,
        "name": category_name,
        "supercategory": category_name,
        "keypoints": list(bodyparts),
        "skeleton": [[a + 1, b + 1] for a, b in skeleton],
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def _read_config(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise DeepLabCutFormatError(f"{path}: missing (not a DeepLabCut project folder?)") from None
    except yaml.YAMLError as exc:
        raise DeepLabCutFormatError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise DeepLabCutFormatError(f"{path}: expected a mapping, got {type(config).__name__}")
    if config.get("multianimalproject"):
        raise NotImplementedError(
            f"{path}: multi-animal DeepLabCut projects (multianimalproject: true) are not supported yet; "
            "only single-animal projects convert to COCO here"
        )
    bodyparts = config.get("bodyparts")
    if not isinstance(bodyparts, list) or not bodyparts or not all(isinstance(b, str) and b for b in bodyparts):
        raise DeepLabCutFormatError(f"{path}: 'bodyparts' must be a non-empty list of names, got {bodyparts!r}")
    if len(set(bodyparts)) != len(bodyparts):
        raise DeepLabCutFormatError(f"{path}: 'bodyparts' has duplicates: {bodyparts}")
    return config


def _skeleton_indices(skeleton: object, bodyparts: list[str], path: Path) -> list[tuple[int, int]]:
    """DLC's skeleton lists pairs of bodypart names; COCO wants index pairs (returned 0-based here)."""
    if not skeleton:
        return []
    index = {name: i for i, name in enumerate(bodyparts)}
    pairs = []
    for edge in skeleton if isinstance(skeleton, list) else [skeleton]:
        if not (isinstance(edge, list | tuple) and len(edge) == 2 and all(e in index for e in edge)):
            raise DeepLabCutFormatError(f"{path}: skeleton edge {edge!r} is not a pair of bodyparts from {bodyparts}")
        pairs.append((index[edge[0]], index[edge[1]]))
    return pairs


def _read_csv(path: Path, bodyparts: list[str], project: Path) -> list[_Row]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DeepLabCutFormatError(f"{path}: cannot read: {exc}") from exc
    if len(table) < 3:
        raise DeepLabCutFormatError(f"{path}: expected 3 header rows (scorer, bodyparts, coords), got {len(table)}")
    heads = [r[0].strip() if r else "" for r in table[:4]]
    if heads[1] == "individuals":
        raise NotImplementedError(f"{path}: multi-animal label file (an 'individuals' header row) is not supported yet")
    if heads[:3] != ["scorer", "bodyparts", "coords"]:
        raise DeepLabCutFormatError(
            f"{path}: lines 1-3 must start with scorer, bodyparts, coords; got {heads[:3]} (not a DeepLabCut CSV?)"
        )
    parts_row, coords_row = table[1], table[2]
    n_index = _index_width(coords_row)
    columns: dict[tuple[str, str], int] = {}
    for j in range(n_index, len(coords_row)):
        part, coord = parts_row[j].strip() if j < len(parts_row) else "", coords_row[j].strip()
        if (part, coord) in columns:
            raise DeepLabCutFormatError(f"{path}: line 2-3: column {part}/{coord} appears twice")
        columns[(part, coord)] = j
    csv_parts = list(dict.fromkeys(p for p, c in columns if c in ("x", "y")))
    unknown = [p for p in csv_parts if p not in bodyparts]
    if unknown:
        raise DeepLabCutFormatError(f"{path}: line 2: bodyparts {unknown} are not in config.yaml bodyparts {bodyparts}")
    for part in csv_parts:
        if (part, "x") not in columns or (part, "y") not in columns:
            raise DeepLabCutFormatError(f"{path}: line 3: bodypart {part!r} needs both an x and a y column")
    absent = [p for p in bodyparts if p not in csv_parts]
    if absent:
        # Bodyparts added to config.yaml after labeling: DLC treats them as unlabeled too.
        log.warning("%s: no columns for bodyparts %s; they are unlabeled (visibility 0) in every frame", path, absent)

    rows = []
    for line, cells in enumerate(table[3:], start=4):
        if not any(c.strip() for c in cells):
            continue  # blank line at the end
        if len(cells) < n_index:
            raise DeepLabCutFormatError(f"{path}: line {line}: {len(cells)} cells, expected at least {n_index}")
        image = _image_name(cells[:n_index], path, line, project)
        xy: list[tuple[float, float] | None] = []
        for part in bodyparts:
            if part not in csv_parts:
                xy.append(None)
                continue
            x = _cell(cells, columns[(part, "x")], path, line, f"{part} x")
            y = _cell(cells, columns[(part, "y")], path, line, f"{part} y")
            if (x is None) != (y is None):
                raise DeepLabCutFormatError(f"{path}: line {line} ({image}): {part} has only one of x, y labeled")
            xy.append(None if x is None or y is None else (x, y))
        rows.append(_Row(path, line, image, tuple(xy)))
    return rows


def _cell(cells: list[str], j: int, path: Path, line: int, what: str) -> float | None:
    text = cells[j].strip() if j < len(cells) else ""
    if text == "" or text.lower() == "nan":
        return None
    try:
        value = float(text)
    except ValueError:
        raise DeepLabCutFormatError(f"{path}: line {line}: {what}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DeepLabCutFormatError(f"{path}: line {line}: {what}: not finite: {text!r}")
    return value


def _image_name(index_cells: list[str], path: Path, line: int, project: Path) -> str:
    """The image path relative to the project folder, posix style."""
    parts = [c.strip() for c in index_cells if c.strip()]
    if not parts:
        raise DeepLabCutFormatError(f"{path}: line {line}: empty image path")
    # Projects labeled on Windows store backslashes in the one-column index.
    name = PurePosixPath(*"/".join(parts).replace("\\", "/").split("/")).as_posix()
    if (project / name).is_file():
        return name
    # A copied or renamed labeled-data folder: DLC itself looks for the file next to the CSV.
    beside = path.parent / PurePosixPath(name).name
    if beside.is_file():
        fallback = beside.relative_to(project).as_posix()
        log.warning("%s: line %d: %s not found; using %s next to the CSV", path, line, name, fallback)
        return fallback
    raise DeepLabCutFormatError(f"{path}: line {line}: image {name} not found under {project}")


def _image_size(file: Path, row: _Row) -> tuple[int, int]:
    try:
        with Image.open(file) as im:
            return im.size
    except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        raise DeepLabCutFormatError(
            f"{row.csv_path}: line {row.line}: cannot read image {file}: {type(exc).__name__}: {exc}"
        ) from exc


def _box(
    points: list[tuple[float, float]], width: int, height: int, margin: float, min_pad: float, row: _Row
) -> list[float]:
    """COCO [x, y, w, h] around the points, padded and clipped to the (width, height) image."""
    box = box_around(points, width, height, margin, min_pad)
    if box is None:
        raise DeepLabCutFormatError(
            f"{row.csv_path}: line {row.line} ({row.image}): labeled keypoints lie outside the {width}x{height} image"
        )
    return box


# ------------------------------------------------------------------------------------------------------------ export


def write_deeplabcut_labels(project_dir: str | os.PathLike[str], coco: dict) -> list[Path]:
    """Write the labels of a COCO keypoint dict into a DeepLabCut project as ``CollectedData_<scorer>.h5`` and
    ``.csv`` in each ``labeled-data/<folder>`` they are in; returns the files written.

    DeepLabCut's own layout: rows indexed by ("labeled-data", folder, file) (DLC >= 2.2), columns a MultiIndex
    (scorer, bodyparts, coords) with x, y per bodypart, NaN where unlabeled; the .h5 under key ``df_with_missing``.
    Images' ``file_name`` must be paths relative to the project (``labeled-data/<folder>/<file>``); the keypoint
    names must be config.yaml's bodyparts (in any order: columns follow config.yaml). A frame the project's label
    file has and ``coco`` does not keeps its row as it is, so nothing labeled before is lost; frames, config.yaml and
    every other file are not touched. Each file is replaced atomically. One labeled instance per frame
    (single-animal projects); more is a ``DeepLabCutFormatError`` naming the frame.
    """
    import pandas as pd

    from pipeline.files import atomic_path

    project = Path(project_dir)
    config = _read_config(project / "config.yaml")
    bodyparts: list[str] = config["bodyparts"]
    scorer = str(config.get("scorer") or "poseloop")
    category = next(c for c in coco["categories"] if c.get("keypoints"))
    names = list(category["keypoints"])
    if sorted(names) != sorted(bodyparts):
        raise DeepLabCutFormatError(
            f"{project / 'config.yaml'}: bodyparts {bodyparts} are not the labels' keypoints {names}"
        )
    column_of = [bodyparts.index(n) for n in names]
    images = {im["id"]: im for im in coco["images"]}
    rows: dict[str, dict[tuple[str, str, str], np.ndarray]] = {}  # folder -> index -> (2 * bodyparts,)
    for ann in coco["annotations"]:
        if ann.get("category_id") != category["id"] or not any(v > 0 for v in ann["keypoints"][2::3]):
            continue
        name = PurePosixPath(images[ann["image_id"]]["file_name"])
        if len(name.parts) != 3 or name.parts[0] != "labeled-data":
            raise DeepLabCutFormatError(
                f"image {images[ann['image_id']]['file_name']}: not a frame of the project "
                "(labeled-data/<folder>/<file>)"
            )
        values = np.full(2 * len(bodyparts), np.nan)
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        for j, (x, y, v) in enumerate(kps):
            if v > 0:
                values[2 * column_of[j] : 2 * column_of[j] + 2] = (x, y)
        if not (project / name).is_file():  # labels of another project's frames would mean nothing here
            raise DeepLabCutFormatError(
                f"{project}: no frame {name}: export to the project the round was prepared from"
            )
        folder_rows = rows.setdefault(name.parts[1], {})
        if name.parts in folder_rows:
            raise DeepLabCutFormatError(f"{name}: more than one labeled instance (a single-animal project has one)")
        folder_rows[name.parts] = values

    written = []
    for folder, new_rows in sorted(rows.items()):
        base, old = _label_file(project / "labeled-data" / folder, bodyparts, project, scorer)
        columns = _columns(base.name.removeprefix("CollectedData_"), bodyparts)
        table = pd.DataFrame(
            np.stack(list(new_rows.values())), index=pd.MultiIndex.from_tuples(list(new_rows)), columns=columns
        )
        if old is not None:  # keep the frames the export does not carry, as they are
            old.columns = columns
            table = pd.concat([old.loc[~old.index.isin(table.index)], table])
        table = table.sort_index()
        csv_path = base.with_suffix(".csv")
        if csv_path.is_file() and _index_columns(csv_path) == 1:  # DLC 2.0 / 2.1's one-column index: keep its style
            table.index = pd.Index(["/".join(parts) for parts in table.index])
        with atomic_path(base.with_suffix(".h5")) as tmp:
            table.to_hdf(tmp, key="df_with_missing", mode="w")
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp)
        written += [base.with_suffix(".h5"), csv_path]
    return written


def _columns(scorer: str, bodyparts: list[str]):  # -> pd.MultiIndex
    import pandas as pd

    return pd.MultiIndex.from_product([[scorer], bodyparts, ["x", "y"]], names=["scorer", "bodyparts", "coords"])


def _label_file(folder: Path, bodyparts: list[str], project: Path, scorer: str):  # -> tuple[Path, pd.DataFrame | None]
    """The folder's label file (its path without suffix) and its rows in our layout, or a new one named after
    config.yaml's scorer. The CSV and the .h5 (what DeepLabCut reads) must agree: when they differ, someone edited one
    of them after the other was written, and writing over both would lose that edit."""
    import pandas as pd

    found = sorted(
        {p.with_suffix("") for p in (*folder.glob("CollectedData_*.csv"), *folder.glob("CollectedData_*.h5"))}
    )
    if len(found) > 1:
        raise DeepLabCutFormatError(f"{folder}: several label files {[p.name for p in found]}: keep one per folder")
    if not found:
        return folder / f"CollectedData_{scorer}", None
    base = found[0]
    csv_path, h5_path = base.with_suffix(".csv"), base.with_suffix(".h5")
    from_csv = _existing_rows(csv_path, bodyparts, project) if csv_path.is_file() else None
    from_h5 = None
    if h5_path.is_file():
        rows, columns, stored = read_label_h5(h5_path)
        index = [tuple(PurePosixPath(row[0].replace("\\", "/")).parts) if len(row) == 1 else row for row in rows]
        values = np.full((len(rows), 2 * len(bodyparts)), np.nan)
        for j, part in enumerate(bodyparts):
            for c, coord in enumerate(("x", "y")):
                match = [k for k, col in enumerate(columns) if col[-2:] == (part, coord)]
                if match:
                    values[:, 2 * j + c] = stored[:, match[0]]
        from_h5 = pd.DataFrame(values, index=pd.MultiIndex.from_tuples(index), columns=_columns(scorer, bodyparts))
    if from_csv is not None and from_h5 is not None:
        a, b = from_csv.sort_index(), from_h5.sort_index()
        if not (a.index.equals(b.index) and np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-6, equal_nan=True)):
            raise DeepLabCutFormatError(
                f"{csv_path} and {h5_path} hold different labels (one was edited after the other was written); "
                "DeepLabCut reads the .h5: make the two agree (or delete the stale one) before exporting"
            )
    return base, from_csv if from_csv is not None else from_h5


def _h5_strings(group, name: str, path: Path) -> list[str]:  # group: h5py.Group
    """A pandas fixed-format index saved under ``name``: its values as text, read from the raw HDF5 arrays."""
    variety = group.attrs.get(f"{name}_variety", b"regular")
    variety = variety.decode() if isinstance(variety, bytes) else str(variety)
    if variety == "regular":
        return [[_text(v)] for v in group[name][()]]
    if variety != "multi":
        raise DeepLabCutFormatError(f"{path}: index {name!r} of kind {variety!r} is not DeepLabCut's layout")
    levels = int(group.attrs[f"{name}_nlevels"])
    columns = []
    for i in range(levels):
        values = [_text(v) for v in group[f"{name}_level{i}"][()]]
        codes = group[f"{name}_label{i}"][()]
        columns.append(["" if code < 0 else values[code] for code in codes])
    return [list(t) for t in zip(*columns, strict=True)]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _PlainData(pickle.Unpickler):
    """Unpickles lists, tuples, strings and numbers only: every class or function lookup is refused, and without one
    a pickle cannot call anything (the "restricting globals" recipe of the pickle module's documentation). Used for
    the column names older pandas wrote as pickled attributes, never for values."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to {module}.{name}")


def _plain_data(raw: Any, path: Path, what: str) -> Any:
    data = bytes(raw) if not isinstance(raw, bytes) else raw
    try:
        return _PlainData(io.BytesIO(data), encoding="utf-8").load()
    except Exception as exc:
        raise DeepLabCutFormatError(
            f"{path}: attribute {what!r} is not plain data ({exc}); poseloop never runs code from a file"
        ) from exc


def read_label_h5(path: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], np.ndarray]:
    """A DeepLabCut label file (``CollectedData_<scorer>.h5``) as numbers: (row index tuples, column tuples,
    values (rows, columns) float64). Both of pandas' layouts DeepLabCut has written: ``fixed`` (DLC >= 2.2: one
    array per block, the index as level / code arrays) and ``table`` (older: one compound table, the column names
    in a pickled attribute).

    Read with h5py as raw arrays, never through PyTables / pandas: those unpickle object columns and every
    attribute, so a crafted .h5 would run code. A file holding Python objects (an object column) is refused by
    name; the older layout's column names go through ``_PlainData``, which cannot call anything.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            unsafe: list[str] = []

            def visit(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset) and (obj.dtype.kind == "O" or h5py.check_vlen_dtype(obj.dtype)):
                    unsafe.append(name)

            f.visititems(visit)
            if unsafe:
                raise DeepLabCutFormatError(
                    f"{path}: holds Python objects ({', '.join(unsafe[:3])}); poseloop never unpickles a file, and "
                    "DeepLabCut's label files hold numbers only: remove it or re-save it from the CSV beside it"
                )
            groups = [g for g in f.values() if isinstance(g, h5py.Group)]
            layout = _text(groups[0].attrs.get("pandas_type", b"")) if len(groups) == 1 else ""
            if layout == "frame":
                return _fixed_frame(groups[0], path)
            if layout == "frame_table" and isinstance(groups[0].get("table"), h5py.Dataset):
                return _table_frame(groups[0]["table"], path)
            raise DeepLabCutFormatError(f"{path}: not a DeepLabCut label file (one pandas frame)")
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        if isinstance(exc, DeepLabCutFormatError):
            raise
        raise DeepLabCutFormatError(f"{path}: cannot read: {type(exc).__name__}: {exc}") from exc


def _fixed_frame(group, path: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], np.ndarray]:
    rows = [tuple(r) for r in _h5_strings(group, "axis1", path)]
    columns: list[tuple[str, ...]] = []
    blocks = []
    for b in range(int(group.attrs["nblocks"])):
        block = group[f"block{b}_values"][()]
        if block.dtype.kind not in "fiu" or block.ndim != 2 or block.shape[0] != len(rows):
            raise DeepLabCutFormatError(f"{path}: block {b} is not a numeric table of {len(rows)} rows")
        blocks.append(block.astype(np.float64))
        columns += [tuple(c) for c in _h5_strings(group, f"block{b}_items", path)]
    return rows, columns, np.concatenate(blocks, axis=1) if blocks else np.zeros((len(rows), 0))


def _table_frame(table, path: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], np.ndarray]:
    data = table[()]
    names = data.dtype.names or ()
    if "index" not in names:
        raise DeepLabCutFormatError(f"{path}: table without an 'index' column is not DeepLabCut's layout")
    rows = [(_text(v),) for v in data["index"]]
    columns: list[tuple[str, ...]] = []
    blocks = []
    for name in (n for n in names if n.startswith("values_block_")):
        width = int(np.prod(data.dtype[name].shape)) or 1
        block = np.asarray(data[name], dtype=np.float64).reshape(len(rows), width)
        kind = _plain_data(table.attrs[f"{name}_kind"], path, f"{name}_kind")
        if not isinstance(kind, list) or len(kind) != block.shape[1]:
            raise DeepLabCutFormatError(f"{path}: {name}'s column names do not match its {block.shape[1]} columns")
        columns += [tuple(str(part) for part in (c if isinstance(c, tuple) else (c,))) for c in kind]
        blocks.append(block)
    return rows, columns, np.concatenate(blocks, axis=1) if blocks else np.zeros((len(rows), 0))


def _index_width(coords_row: list[str]) -> int:
    """Index columns of a DeepLabCut CSV, from its ``coords`` header row: 1 (DLC 2.0 / 2.1, one path column) or 3
    (DLC >= 2.2, the path split in folder / video / file). The header rows leave the extra index cells empty, so the
    first non-empty coords cell marks where the data starts."""
    return next((j for j in range(1, len(coords_row)) if coords_row[j].strip()), len(coords_row))


def _index_columns(csv_path: Path) -> int:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        coords = next((r for r in csv.reader(f) if r and r[0].strip() == "coords"), [])
    return _index_width(coords)


def _existing_rows(csv_path: Path, bodyparts: list[str], project: Path):  # -> pd.DataFrame
    """A project's label CSV as the table ``write_deeplabcut_labels`` writes (read by our own CSV reader, so an
    older one-column index comes back in DLC >= 2.2's three-level form)."""
    import pandas as pd

    index, values = [], []
    for row in _read_csv(csv_path, bodyparts, project):
        index.append(PurePosixPath(row.image).parts)
        values.append([c for p in row.xy for c in (p if p is not None else (np.nan, np.nan))])
    return pd.DataFrame(
        np.asarray(values, dtype=np.float64).reshape(len(values), 2 * len(bodyparts)),
        index=pd.MultiIndex.from_tuples(index) if index else pd.MultiIndex.from_tuples([], names=[None] * 3),
        columns=_columns("", bodyparts),
    )
