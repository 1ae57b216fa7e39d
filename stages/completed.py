"""DVC stage `completed`: data/corrections/ + data/prepared/pool.json -> data/completed.json, the pool images
annotators completed (every person on them boxed: an answered "nobody found" task), which the instance finder learns
from besides the seed images (``pipeline.corrections.completed_images``). A stage of its own so that the finder is
trained again only when this set changes, not at every pull.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.console import add_json_flag, stage_result
from pipeline.corrections import completed_images, read_store
from pipeline.data.coco import load_json, write_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"), help="corrections store folder")
    parser.add_argument("--pool", type=Path, default=Path("data/prepared/pool.json"), help="the prepared pool")
    parser.add_argument("--out", type=Path, default=Path("data/completed.json"))
    add_json_flag(parser)
    args = parser.parse_args()
    corrections, skips = read_store(args.corrections)
    completed = completed_images(corrections, skips, load_json(args.pool))
    write_coco(args.out, completed)
    people = len(completed["annotations"])
    line = f"{len(completed['images'])} pool images completed by annotators ({people} people) -> {args.out}"
    stage_result("completed", line, {"images": len(completed["images"]), "people": people}, args.json)


if __name__ == "__main__":
    main()
