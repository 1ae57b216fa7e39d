"""The instance finder over the pool's unboxed images on Ray Data: the find stage's pass, run as the teacher's
(pipeline/pseudolabel.py) is: image rows -> ``FinderPredictor`` actors (one finder load each, GPU when asked) -> the
driver. A module of its own so that the find stage (and its finder's ~15 min of training) depends on the finder and
Ray only, not on the teacher's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.finding import FinderPredictor
from pipeline.ray_cluster import route_ray_logs, verbose


def find_on_ray(
    finder_dir: Path,
    images: list[dict],
    images_root: Path,
    *,
    batch_size: int = 16,
    actors: int = 1,
    cpus_per_actor: float = 0.5,
    gpus_per_actor: float = 0.0,
    threads_per_actor: int = 2,
    progress: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The finder saved in ``finder_dir`` (``pipeline.finding.save_finder``) over COCO image records on Ray Data
    (``FinderPredictor`` actors); per image, in order, (boxes (n, 4) image px, scores (n,)) as
    ``pipeline.finding.find_instances`` gives them. Needs a running Ray (``ray_session``)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # found people in image order, run after run
    if not verbose():
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    rows = [{"file_name": im["file_name"], "width": int(im["width"]), "height": int(im["height"])} for im in images]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size))).map_batches(
        FinderPredictor,
        fn_constructor_kwargs={
            "finder_dir": str(Path(finder_dir).resolve()),
            "images_root": str(Path(images_root).resolve()),
            "threads": threads_per_actor,
            "use_gpu": gpus_per_actor > 0,
        },
        batch_size=batch_size,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    route_ray_logs(None)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(rows), desc="find", unit="image", disable=not progress, dynamic_ncols=True)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for boxes, scores in zip(batch["boxes"], batch["scores"], strict=True):
            kept = ~np.isnan(scores)
            found.append((boxes[kept], scores[kept]))
        bar.update(len(batch["scores"]))
    bar.close()
    if len(found) != len(rows):
        raise RuntimeError(f"the finder's Ray Data pass returned {len(found)} images of {len(rows)}")
    return found
