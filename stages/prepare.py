"""DVC stage `prepare`: params.data -> data/prepared/ (labeled, pool, val, test, oracle + images)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.prepare import prepare

OUT_DIR = Path("data/prepared")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params().data
    # DVC removes outputs before a run; when run by hand, start clean too so no file of an older split survives.
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    counts = prepare(params, OUT_DIR)
    print(json.dumps({"prepared": str(OUT_DIR), "instances": counts}))


if __name__ == "__main__":
    main()
