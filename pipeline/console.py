"""What a stage prints when it ends: one line a person reads, or (``--json``) the result as one JSON object.

The full numbers are in each stage's metrics or report file (dvc.yaml names them); the terminal of a ``dvc repro``
shows one line per stage (issue #25: lines of up to 743 characters of JSON were read by nobody).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any


def stage_logging() -> None:
    """INFO from the project's own loggers, as ``LEVEL logger: message``; libraries that announce their settings at
    INFO on import (numexpr's "NumExpr defaulting to 2 threads.", in every stage that imports pandas) only warn."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("numexpr").setLevel(logging.WARNING)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--json`` option every stage has (scripts and tests read the result from stdout with it)."""
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object instead of a line")


def stage_result(stage: str, line: str, result: dict[str, Any], as_json: bool) -> None:
    """Print ``"<stage>: <line>"``, or ``result`` as one JSON line when ``as_json``."""
    print(json.dumps(result) if as_json else f"{stage}: {line}", flush=True)
