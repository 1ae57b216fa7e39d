"""python -m pipeline <command>: the tools a user runs by hand between rounds (the rounds themselves: dvc repro)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as exc:  # bad input: say what and where, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, got {text}")
    return value


def _sigma(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to state (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A parser whose help states every option's default; its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options (``run`` says what each calls).

    Long because every option of every command is declared here, in one place, where a reader of ``--help`` looks.
    """
    parser = _Parser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "validate",
        help="check a COCO / MPII / Label Studio / SLEAP file, a DeepLabCut project, or a pool video / image folder; "
        "exit 0 when clean",
    )
    p.add_argument(
        "annotations", type=Path, help="a JSON file, a .slp file, a DeepLabCut project, a video or an image folder"
    )
    p.add_argument("--images", type=Path, default=None, help="image folder: also check every image file")
    p.add_argument("--category", default=None, help="the keypoint category (name or id) when a file defines several")
    p.add_argument(
        "--format",
        choices=("auto", "coco", "mpii", "labelstudio", "sleap", "deeplabcut", "lightning_pose"),
        default="auto",
        help="the file's layout (auto: from its content)",
    )

    p = sub.add_parser("export-labels", help="the project's labels as COCO, DeepLabCut or SLEAP")
    p.add_argument("--format", choices=("coco", "deeplabcut", "sleap"), required=True, help="the layout to write")
    p.add_argument("out", type=Path, help="COCO: a .json file; DeepLabCut: the project folder; SLEAP: a .slp file")
    p.add_argument("--project", type=Path, default=Path("."), help="project root")
    p.add_argument("--embed", action="store_true", help="SLEAP: store the frames in the .slp file")
    p.add_argument("--force", action="store_true", help="replace an existing COCO / SLEAP file")

    p = sub.add_parser("evaluate", help="OKS AP/AR, PCK and errors of predictions against ground truth")
    p.add_argument("gt", type=Path, help="ground-truth COCO keypoint file")
    p.add_argument("predictions", type=Path, help="COCO results list (or a COCO file with annotations)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sigmas", type=_sigma, nargs="+", default=None, help="OKS sigmas for a non-COCO schema")

    p = sub.add_parser("preview", help="draw the people of a COCO keypoint file onto a PNG contact sheet")
    p.add_argument("annotations", type=Path, help="a COCO keypoint file")
    p.add_argument("--images", type=Path, default=None, help="image folder (default: the file's folder)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--num", type=_positive_int, default=8, help="how many images (the first N with people)")
    p.add_argument("--columns", type=_positive_int, default=4, help="images per row of the sheet")

    p = sub.add_parser("labelstudio", help="a local Label Studio server and the simulated annotator")
    ls_sub = p.add_subparsers(dest="ls_command", required=True)
    q = ls_sub.add_parser(
        "serve",
        help="run a local Label Studio until Ctrl-C (in a terminal of its own); prints the two export lines",
    )
    q.add_argument("--port", type=_port, default=8080, help="TCP port on 127.0.0.1")
    q.add_argument("--data-dir", type=Path, default=Path(".labelstudio"), help="database, log, credentials")
    q.add_argument("--document-root", type=Path, default=Path("data"), help="folder served as local files")
    q = ls_sub.add_parser(
        "simulate",
        help="complete the pending tasks of a project from the hidden truth",
    )
    q.add_argument(
        "--oracle", type=Path, default=Path("data/prepared/oracle.json"), help="COCO file with the hidden truth"
    )
    q.add_argument("--project", default="poseloop", help="project title")
    q.add_argument("--noise", type=float, default=0.0, help="Gaussian noise on every keypoint, pixels (sigma)")
    q.add_argument("--miss-rate", type=float, default=0.0, help="probability of skipping a task")
    q.add_argument("--seed", type=int, default=0, help="random seed of the noise and the skips")
    q.add_argument("--delay", type=float, default=0.0, help="seconds between tasks")
    q.add_argument(
        "--min-keypoints",
        type=int,
        default=3,
        help="skip a person with fewer labeled keypoints in the truth as unlabelable",
    )

    _add_developer_commands(sub)

    p = sub.add_parser("promote", help="move the registry's champion alias to a version (default: the challenger)")
    p.add_argument("--version", type=int, default=None, help="model version number (default: the challenger)")
    p.add_argument("--name", default=None, help="registered model (default: params.register.model_name)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the project's params file")

    p = sub.add_parser("status", help="round, label counts, Label Studio queue, champion and challenger")
    p.add_argument("--project", type=Path, default=Path("."), help="project root")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    return parser


def _add_developer_commands(sub: argparse._SubParsersAction) -> None:
    """``synthetic`` and ``summary``: a look at the generated data and at the networks' size and cost."""
    p = sub.add_parser("synthetic", help="write a small synthetic data set (images/ and annotations.json)")
    p.add_argument("--out", type=Path, required=True, help="output folder (images/ and annotations.json)")
    p.add_argument("--num-images", type=_positive_int, default=16, help="how many images")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--width", type=_positive_int, default=256, help="image width")
    p.add_argument("--height", type=_positive_int, default=256, help="image height")
    p.add_argument("--sheet", action="store_true", help="also write sheet.png with the keypoints drawn")

    p = sub.add_parser("summary", help="parameters and GMACs of every backbone")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(192, 256),
        metavar=("W", "H"),
        help="network input width and height (multiples of 32)",
    )
    p.add_argument("--keypoints", type=int, default=17, help="heatmap channels of the 1x1 head")


def run(args: argparse.Namespace) -> int:
    """The library function behind each command (imported here, so a command loads only what it uses)."""
    if args.command == "validate":
        from pipeline.data.validate import validate_command

        category = int(args.category) if args.category and args.category.isdigit() else args.category
        return validate_command(args.annotations, args.images, category=category, fmt=args.format)
    if args.command == "export-labels":
        from pipeline.export_labels import export_labels_command

        return export_labels_command(args.format, args.out, args.project, embed=args.embed, force=args.force)
    if args.command == "evaluate":
        from pipeline.evaluation import evaluate_command

        return evaluate_command(args.gt, args.predictions, args.json, sigmas=args.sigmas)
    if args.command == "preview":
        from pipeline.viz import preview_command

        return preview_command(args.annotations, args.images, args.out, args.num, args.columns)
    if args.command == "labelstudio" and args.ls_command == "serve":
        from pipeline.labelstudio.server import serve_command

        return serve_command(args.port, args.data_dir, args.document_root)
    if args.command == "labelstudio" and args.ls_command == "simulate":
        from pipeline.labelstudio.oracle import simulate_command

        return simulate_command(
            args.oracle, args.project, args.noise, args.miss_rate, args.seed, args.delay, args.min_keypoints
        )
    if args.command == "synthetic":
        from pipeline.data.synthetic import synthetic_command

        return synthetic_command(args.out, args.num_images, args.seed, args.width, args.height, args.sheet)
    if args.command == "summary":
        from models.summary import summary_command

        return summary_command(tuple(args.input_size), args.keypoints)
    if args.command == "promote":
        from pipeline.registry import promote_command

        return promote_command(args.name, args.version, args.params)
    if args.command == "status":
        from pipeline.status import status_command

        return status_command(args.project, as_json=args.json)
    raise ValueError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
