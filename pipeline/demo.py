"""``make demo`` (``python -m pipeline.demo``): the whole loop, unattended, against a real local Label Studio.

Starts a Label Studio server (data in .labelstudio/), runs round 1 (``dvc repro``: everything up to the export of the
people the selection policy sends, as pre-annotated tasks), lets the simulated annotator correct those tasks from
oracle.json through the API, runs round 2 (pull -> merge -> retrain -> register -> a new selection exported with the new
model's predictions), prints the status table and where to look.

Export runs forced in each round (``dvc repro --force --single-item export``): DVC cannot see that the tasks' target
changed from the file hand-off to a server, and export is idempotent, so forcing it costs only the check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.labelstudio.client import ENV_API_KEY, ENV_URL
from pipeline.labelstudio.server import LocalLabelStudio, free_port
from pipeline.status import status_table


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="Label Studio port (a free one if this is taken)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--noise", type=float, default=1.0, help="simulated annotator's click noise, pixels")
    parser.add_argument("--keep-serving", action="store_true", help="leave Label Studio up until Ctrl-C at the end")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    port = args.port
    try:
        server = LocalLabelStudio(data_dir=".labelstudio", document_root="data", port=port)
        _step(f"starting Label Studio on {server.url}")
        server.start()
    except Exception as exc:  # the port is taken: another server, maybe another demo; use a free port instead
        print(f"port {port}: {exc}; trying a free port", flush=True)
        server = LocalLabelStudio(data_dir=".labelstudio", document_root="data", port=free_port())
        server.start()
    os.environ.update({ENV_URL: server.url, ENV_API_KEY: server.token})  # the stages and the status table ask it
    env = dict(os.environ)
    python = sys.executable
    try:
        for round_index in range(1, args.rounds + 1):
            _step(f"round {round_index}: dvc repro")
            _run(["dvc", "repro"], env)
            _run(["dvc", "repro", "--force", "--single-item", "export"], env)
            if round_index < args.rounds:
                _step(f"round {round_index}: the simulated annotator corrects the exported tasks")
                _run(
                    [
                        python,
                        "-m",
                        "pipeline",
                        "labelstudio",
                        "simulate",
                        "--oracle",
                        "data/prepared/oracle.json",
                        "--noise",
                        str(args.noise),
                    ],
                    env,
                )
        _step("status")
        print(status_table(Path()), flush=True)
        minutes = (time.perf_counter() - started) / 60
        print(
            f"\ndemo finished in {minutes:.1f} min. Where to look:\n"
            f"  models and review reports:  mlflow ui --backend-store-uri sqlite:///mlflow.db  (then http://127.0.0.1:5000)\n"
            f"  metrics per round:          dvc metrics show;  dvc plots show (PNGs in plots/)\n"
            f"  Label Studio:               {server.url}  (login {server.username}, password in "
            f"{server.credentials_path})",
            flush=True,
        )
        if args.keep_serving:
            print("Label Studio stays up; Ctrl-C stops it.", flush=True)
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
