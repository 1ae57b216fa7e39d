"""What an annotator sees: the round's exported tasks in a real Label Studio, rendered by headless Chromium.

``python -m bench labelstudio_screens`` after ``make run``: starts a local Label Studio on a temporary data folder with
the project's ``data/`` as document root, sends the first tasks of ``artifacts/labelstudio_tasks.json`` (the round's
file hand-off), logs in with Playwright, opens the labeling view (the instructions first, then a task) and writes
``docs/images/labelstudio_instructions.png`` and ``docs/images/labelstudio_task.png``. It also checks, in the page
the browser rendered, that the task tells the annotator what to do (the instructions, the task's note naming the
keypoints to check first).

Needs the ``screens`` extra (``pip install -e ".[screens]"``: Playwright) and Debian's Chromium
(``apt-get install chromium``); Playwright's own browser download is not used. Skipped with a message when either
is missing, so ``make bench`` runs without them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.report import write_section
from pipeline.data.coco import read_coco
from pipeline.data.labelstudio.config import TASK_LINE
from pipeline.labelstudio.client import get_or_create_project, send_tasks
from pipeline.labelstudio.server import LocalLabelStudio, free_port

NAME = "labelstudio_screens"
TASKS_FILE = Path("artifacts/labelstudio_tasks.json")
POOL_FILE = Path("data/pool.json")
IMAGES = Path("docs/images")
CHROMIUM = "/usr/bin/chromium"
# as root in a container, without background network traffic on a closed network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOWN = 2  # tasks sent to the screenshot project


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return 'Playwright is not installed (pip install -e ".[screens]")'
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not TASKS_FILE.is_file() or not POOL_FILE.is_file():
        return f"{TASKS_FILE} or {POOL_FILE} is missing: run `make run` first (the file hand-off writes the tasks)"
    return None


def _screens(url: str, email: str, password: str, project: int, task: int) -> dict[str, bool]:
    """Log in, open the labeling view (instructions, then the task), write the two pictures; returns what the
    rendered page showed."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, bool] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{url}/user/login", wait_until="networkidle")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{url}/projects/{project}/data?labeling=1&task={task}", wait_until="networkidle")
        time.sleep(3)  # the instructions modal animates in
        seen["instructions shown before the task"] = page.get_by_text("One person per task.").count() > 0
        page.screenshot(path=str(IMAGES / "labelstudio_instructions.png"))
        page.keyboard.press("Escape")
        for close in ("button[aria-label=Close]", ".ant-modal-close"):
            if page.locator(close).count():
                page.locator(close).first.click()
                break
        page.wait_for_selector("canvas", timeout=60_000)
        time.sleep(4)  # the image and the regions draw after the canvas exists
        text = page.inner_text("body")
        seen["the task line above the image"] = TASK_LINE in text
        seen["the task's note (confidence, keypoints to check first)"] = "Model confidence" in text
        page.screenshot(path=str(IMAGES / "labelstudio_task.png"))
        browser.close()
    return seen


def run() -> None:
    missing = _missing()
    if missing:
        print(f"[{NAME}] skipped: {missing}", flush=True)
        return
    from label_studio_sdk import LabelStudio

    schema = read_coco(POOL_FILE).schema
    tasks = json.loads(TASKS_FILE.read_text())[:SHOWN]
    version = tasks[0]["predictions"][0]["model_version"]
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalLabelStudio(data_dir=Path(tmp) / "ls", document_root=Path("data").resolve(), port=free_port())
        server.start()
        try:
            ls = LabelStudio(base_url=server.url, api_key=server.token)
            project = get_or_create_project(ls, "poseloop screens", schema, Path("data").resolve(), version)
            mapping = send_tasks(ls, project, tasks, version)
            first = mapping[int(tasks[0]["data"]["instance_id"])]
            seen = _screens(server.url, server.username, server.password, project, first)
        finally:
            server.stop()
            shutil.rmtree(Path(tmp) / "ls", ignore_errors=True)
    rows = "\n".join(f"| {what} | {'yes' if ok else 'NO'} |" for what, ok in seen.items())
    body = (
        f"The first task the last round exported (`{TASKS_FILE}`, model `{version}`) in Label Studio, rendered by "
        "headless Chromium through Playwright. What the rendered page showed:\n\n| check | seen |\n|---|---|\n"
        f"{rows}\n\n![the instructions](images/labelstudio_instructions.png)\n\n"
        "![a task](images/labelstudio_task.png)"
    )
    write_section(
        NAME,
        "What an annotator sees (Label Studio, headless Chromium)",
        "python -m bench " + NAME,
        body,
        {
            "seen": seen,
            "model_version": version,
        },
    )
    print(f"[{NAME}] wrote {IMAGES / 'labelstudio_task.png'}; seen: {seen}", flush=True)
    if not all(seen.values()):
        raise RuntimeError(f"the rendered task lacks: {[k for k, ok in seen.items() if not ok]}")


if __name__ == "__main__":
    run()
