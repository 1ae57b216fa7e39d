"""Pictures people look at: keypoint overlays and contact sheets (PNG, rendered offline with OpenCV)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.keypoints import KeypointSchema

SHEET_TILE = 192  # px, the side of one instance in prediction_sheet

LEFT_COLOUR = (255, 128, 0)  # RGB: left side orange
RIGHT_COLOUR = (0, 160, 255)  # right side blue
CENTRE_COLOUR = (0, 220, 0)
_SHIFT = 4  # cv2 fractional bits: draw at sub-pixel positions, so overlays show where a keypoint really is
_ONE = 1 << _SHIFT


def _px(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0]) * _ONE), round(float(point[1]) * _ONE)


def side_colours(schema: KeypointSchema) -> list[tuple[int, int, int]]:
    """(K,) RGB colour of each keypoint: left orange, right blue, the rest centre green. The side comes from the
    name (``left_*`` / ``l_*``, ``right_*`` / ``r_*``, any case), else from the flip pairs (first of a pair left):
    a schema may list its pairs right-first. The overlays and the Label Studio config use the same, so a picture
    and a task read alike."""
    side = {}
    for a, b in schema.flip_pairs:
        side.setdefault(a, LEFT_COLOUR)
        side.setdefault(b, RIGHT_COLOUR)
    for j, name in enumerate(schema.names):
        low = name.lower()
        if low.startswith(("left", "l_")):
            side[j] = LEFT_COLOUR
        elif low.startswith(("right", "r_")):
            side[j] = RIGHT_COLOUR
    return [side.get(j, CENTRE_COLOUR) for j in range(len(schema.names))]


def draw_keypoints(
    image: np.ndarray,
    keypoints: np.ndarray,
    schema: KeypointSchema,
    boxes: Sequence[Sequence[float]] | None = None,
    radius: int = 3,
) -> np.ndarray:
    """Draw people on a copy of ``image`` (H, W, 3) RGB uint8.

    keypoints: (N, K, 3) with the third value a COCO visibility (0 hidden, 1 occluded: hollow, 2 visible: filled)
    or a score in [0, 1] (drawn filled when > 0). boxes: N boxes [x, y, w, h] in pixels or None.
    Left keypoints orange, right blue, centre green, so a left/right swap is visible at a glance.
    """
    canvas = np.ascontiguousarray(image.copy())
    colours = side_colours(schema)
    thickness = max(1, radius // 2)
    for n, person in enumerate(np.asarray(keypoints, dtype=np.float64).reshape(-1, schema.num_keypoints, 3)):
        shown = person[:, 2] > 0
        if boxes is not None:
            x, y, w, h = boxes[n]
            cv2.rectangle(canvas, (round(x), round(y)), (round(x + w), round(y + h)), (255, 255, 255), 1)
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                cv2.line(canvas, _px(person[a]), _px(person[b]), colours[b], thickness, cv2.LINE_AA, _SHIFT)
        for j in np.flatnonzero(shown):
            filled = -1 if person[j, 2] != 1 else thickness  # COCO v=1 (occluded): hollow circle
            cv2.circle(canvas, _px(person[j]), radius * _ONE, colours[j], filled, cv2.LINE_AA, _SHIFT)
    return canvas


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = 4, tile_size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """Tiles (each (H, W, 3) RGB) resized to ``tile_size`` (w, h) and laid out in a grid; returns (H', W', 3)."""
    w, h = tile_size
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA)
    return sheet


def load_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a picture ``save_png`` wrote."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def save_png(path: Path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def preview_command(annotations: Path, images: Path | None, out: Path, num: int, columns: int) -> int:
    """``python -m pipeline preview``: the first ``num`` images with people, keypoints drawn, as one PNG."""
    from pipeline.data.coco import read_coco
    from pipeline.data.images import load_image

    coco = read_coco(annotations)
    root = images if images is not None else Path(annotations).parent
    tiles = []
    for image in coco.images:
        people = [a for a in coco.annotations_of(image["id"]) if a.get("num_keypoints", 0) > 0]
        if not people:
            continue
        pixels = load_image(coco.image_path(image, root))
        if pixels is None:  # load_image has logged which file and why
            continue
        keypoints = np.asarray([a["keypoints"] for a in people], dtype=np.float64)
        tiles.append(draw_keypoints(pixels, keypoints, coco.schema, boxes=[a["bbox"] for a in people]))
        if len(tiles) == num:
            break
    if not tiles:
        print(f"{annotations}: no image with labeled people to draw")
        return 2
    save_png(out, contact_sheet(tiles, columns=min(columns, len(tiles))))
    print(f"wrote {out} ({len(tiles)} images)")
    return 0


def prediction_sheet(
    image_paths: Sequence[Path],
    boxes: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    schema: KeypointSchema,
    columns: int = 4,
    min_score: float = 0.2,
) -> np.ndarray:
    """One tile per instance: the person's region (box x 1.5) with the predicted keypoints drawn.

    boxes (N, 4) xywh image px; keypoints (N, K, 2) image px; scores (N, K): keypoints below ``min_score`` are not
    drawn. Unreadable images are skipped.
    """
    from pipeline.data.images import load_image

    tiles = []
    for path, box, kp, sc in zip(image_paths, boxes, keypoints, scores, strict=True):
        image = load_image(path)
        if image is None:
            continue
        x, y, w, h = box
        side = 1.5 * max(w, h)
        x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
        x1, y1 = int(min(image.shape[1], x0 + side)), int(min(image.shape[0], y0 + side))
        shown = np.concatenate([kp - [x0, y0], np.where(sc >= min_score, 2.0, 0.0)[:, None]], axis=1)
        tiles.append(draw_keypoints(image[y0:y1, x0:x1], shown[None], schema, radius=2))
    if not tiles:
        return np.zeros((64, 64, 3), np.uint8)
    return contact_sheet(tiles, columns=min(columns, len(tiles)), tile_size=(SHEET_TILE, SHEET_TILE))


def learning_curve(history: Sequence[dict], path: Path) -> Path:
    """Training loss and val AP per epoch, as a PNG (rendered offline with matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_ax.plot(epochs, [h["loss_total"] for h in history], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    ap_ax = loss_ax.twinx()
    ap_ax.plot(epochs, [h.get("val_ap", np.nan) for h in history], color="tab:orange", marker="o", label="val AP")
    ap_ax.set_ylabel("val OKS AP", color="tab:orange")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def score_histograms(signals: dict[str, np.ndarray], selected: np.ndarray, path: Path, bins: int = 30) -> Path:
    """One histogram per selection signal, selected instances against the rest (densities), as a PNG.

    signals: {name: (N,) values, NaN = absent}; selected: (N,) bool. Signals absent everywhere are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {k: v for k, v in signals.items() if np.isfinite(v).any()}
    columns = min(3, max(len(shown), 1))
    rows = -(-max(len(shown), 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.6 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, (name, values) in zip(axes.ravel(), shown.items(), strict=False):
        finite = np.isfinite(values)
        edges = np.histogram_bin_edges(values[finite], bins=bins)
        ax.hist(values[finite & ~selected], bins=edges, density=True, alpha=0.6, color="tab:gray", label="not selected")
        if (finite & selected).any():
            ax.hist(values[finite & selected], bins=edges, density=True, alpha=0.7, color="tab:red", label="selected")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def rounds_curve(rows: Sequence[dict], path: Path) -> Path:
    """Val AP (and PCK@0.1) against labeled instances, one point per round, as a PNG. rows: dicts with round,
    labeled_instances, val_ap, val_pck10 (strings from a CSV are fine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def num(value: object) -> float:
        return float(value) if value not in (None, "") else np.nan

    labeled = [num(r["labeled_instances"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(labeled, [num(r["val_ap"]) for r in rows], marker="o", color="tab:orange", label="val OKS AP")
    pck = ax.twinx()
    pck.plot(
        labeled, [num(r.get("val_pck10")) for r in rows], marker="s", color="tab:blue", alpha=0.6, label="val PCK@0.1"
    )
    for r, x in zip(rows, labeled, strict=True):
        ax.annotate(f"round {r['round']}", (x, num(r["val_ap"])), textcoords="offset points", xytext=(4, 4), fontsize=8)
    # both axes from 0: a gain of 0.001 AP must not look like a jump
    aps = [num(r["val_ap"]) for r in rows]
    ax.set_ylim(0, max(0.05, 1.25 * np.nanmax(aps)) if np.isfinite(aps).any() else 1.0)
    pck.set_ylim(0, 1)
    ax.set_xlabel("labeled instances")
    ax.set_ylabel("val OKS AP", color="tab:orange")
    pck.set_ylabel("val PCK@0.1", color="tab:blue")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def worst_examples_sheet(
    rows: list[dict], records: Sequence, keypoints: np.ndarray, scores: np.ndarray, schema: KeypointSchema
) -> np.ndarray:
    """One row per instance of ``rows`` (``worst_instances``: index, instance_id, oks, image): ground truth (left)
    beside the prediction (right). ``records``: the InstanceRecords the predictions ``keypoints`` (N, K, 2) and
    ``scores`` (N, K) were made on."""
    # prediction_sheet leaves out unreadable images; leaving them out here first keeps the two columns aligned.
    rows = [r for r in rows if Path(r["image"]).is_file()]
    if not rows:
        return np.zeros((64, 2 * 64, 3), np.uint8)
    index = [r["index"] for r in rows]
    paths = [records[i].image_path for i in index]
    boxes = np.array([records[i].bbox for i in index])
    truth = np.stack([records[i].keypoints for i in index])  # (N, K, 3) with COCO flags
    left = prediction_sheet(
        paths, boxes, truth[..., :2], (truth[..., 2] > 0).astype(float), schema, columns=1, min_score=0.5
    )
    # Every predicted keypoint is drawn (min_score 0): on the worst examples the wrong ones are the point.
    right = prediction_sheet(paths, boxes, keypoints[index], scores[index], schema, columns=1, min_score=0.0)
    sheet = np.ascontiguousarray(np.hstack([left, right]))
    for n, row in enumerate(rows):
        y = n * SHEET_TILE + 16
        _outlined_text(sheet, "truth", (4, y))
        _outlined_text(sheet, f"pred OKS {row['oks']:.2f} #{row['instance_id']}", (SHEET_TILE + 4, y))
    return sheet


def _outlined_text(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    """White text with a dark outline, readable on any background."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thickness, cv2.LINE_AA)
