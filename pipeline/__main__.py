"""``python -m pipeline <command>``: the tools a user runs by hand between rounds."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(argv)
    except (FileNotFoundError, ValueError) as exc:  # bad input: say what and where, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a COCO keypoint file; exit 0 when clean, 2 when not")
    p.add_argument("annotations", type=Path)
    p.add_argument("--images", type=Path, default=None, help="image folder: also check every image file")

    p = sub.add_parser("evaluate", help="OKS AP/AR, PCK and errors of predictions against ground truth")
    p.add_argument("gt", type=Path, help="ground-truth COCO keypoint file")
    p.add_argument("predictions", type=Path, help="COCO results list (or a COCO file with annotations)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sigmas", type=float, nargs="+", default=None, help="OKS sigmas for a non-COCO schema")

    p = sub.add_parser("preview", help="draw the people of a COCO keypoint file onto a PNG contact sheet")
    p.add_argument("annotations", type=Path)
    p.add_argument("--images", type=Path, default=None, help="image folder (default: the file's folder)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--num", type=int, default=8, help="how many images (the first N with people)")
    p.add_argument("--columns", type=int, default=4)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "validate":
        from pipeline.data.coco import validate_command

        return validate_command(args.annotations, args.images)
    if args.command == "evaluate":
        from pipeline.evaluation import evaluate_command

        return evaluate_command(args.gt, args.predictions, args.json, sigmas=args.sigmas)
    if args.command == "preview":
        from pipeline.viz import preview_command

        return preview_command(args.annotations, args.images, args.out, args.num, args.columns)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
