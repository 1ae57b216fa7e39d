"""DVC stage `inputs`: the files prepare reads from outside git and DVC (a source's files, data.pool's images and
videos) -> data/inputs.json, each with its size and modification time. Runs every time; prepare runs again only when
the list changed (pipeline/data/inputs.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.data.inputs import fingerprint, input_files
from pipeline.files import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/inputs.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    params = load_params(args.params).data
    manifest = fingerprint(input_files(params, Path.cwd()), Path.cwd())
    write_json(args.out, manifest)
    size = sum(size for size, _ in manifest["files"].values())
    line = f"{len(manifest['files'])} files outside git ({size / 1e6:.1f} MB) -> {args.out}"
    stage_result("inputs", line, {"files": len(manifest["files"]), "bytes": size}, args.json)


if __name__ == "__main__":
    main()
