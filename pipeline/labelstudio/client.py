"""Talk to a Label Studio server (SDK 2.1.2, server 1.23.2): project setup, idempotent export, pull of annotations.

Connection. ``connect()`` reads ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` from the environment only (never
from params.yaml or arguments). The key is never printed or logged, and no exception raised here contains it: SDK
errors are re-raised as ``LabelStudioError`` with the HTTP status and the server's message only (the SDK's own
``ApiError`` text dumps the response headers, session cookie included).

Retries. The SDK retries by itself (``max_retries=2``), POSTs included, on a dropped connection and on 5xx / 409: a
task import that reached the server but whose answer was lost would be imported twice. ``connect()`` turns that off;
``with_retries`` retries with exponential backoff on connection errors and 502/503/504 only, and the writes here
re-read the server's state before retrying, so a retry never duplicates. When the server stays away:
``LabelStudioUnavailableError("Label Studio at <url> is not answering after N attempts ...")``.

Listing. ``tasks.list`` pages until the server answers 404 past the last page. Its ``include`` (which fields come
back) is applied at every nesting level, so nested objects need their own field names listed too (``_FETCH_FIELDS``).
``predictions_model_versions`` is only filled with ``fields="all"``. Cost on 2 cores: a page of 1000 tasks with
``include="id,data,total_annotations,cancelled_annotations,predictions_model_versions"`` takes 0.5-2 s (more
predictions per task, more time), full task objects (predictions with their results) ~4 s. Measured at 10,000
tasks of 17 keypoints: export 33 s, a no-op re-export 6-18 s, fetch_annotations 12-30 s.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from pipeline.corrections import AnnotationProblem, Correction, Skip
from pipeline.data.labelstudio.annotations import collect_task_records, parse_model_versions
from pipeline.data.labelstudio.config import INSTRUCTIONS_START, instructions_html, keypoint_labels, labeling_config
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

ENV_URL = "LABEL_STUDIO_URL"
ENV_API_KEY = "LABEL_STUDIO_API_KEY"
STORAGE_TITLE = "poseloop images"
# Label Studio serves a local file to anyone logged in when a local-files storage covers it, so the storage goes on
# the folder of the images prepare writes (data/prepared/images/...), not on data/prepared, which also holds the
# hidden truth (oracle.json) and the val/test labels. (The server also refuses a storage on the document root.)
DEFAULT_IMAGE_SUBDIR = "prepared/images"
PAGE_SIZE = 1000
_RETRY_STATUS = (502, 503, 504)
_MAX_DELAY_S = 30.0
_INDEX_FIELDS = "id,data,total_annotations,cancelled_annotations,predictions_model_versions"
# ``include`` is one flat list applied at every nesting level (rest_flex_fields): the annotation fields must be named
# here too, or each annotation comes back as {"id": ...} only.
_ANNOTATION_FIELDS = "result,was_cancelled,completed_by,created_at,updated_at,parent_prediction,last_action"
# predictions with their results: the effort of a correction is measured against the pre-annotation it started from
_FETCH_FIELDS = f"id,data,annotations,predictions,predictions_model_versions,model_version,{_ANNOTATION_FIELDS}"

T = TypeVar("T")


class LabelStudioError(RuntimeError):
    """Label Studio refused a request or cannot be used; the message says what and why, never the API key.

    ``status`` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LabelStudioUnavailableError(LabelStudioError):
    """The server did not answer (connection refused / dropped, gateway errors) after every retry."""


# ------------------------------------------------------------------------------------------------------ connection


def base_url(ls: LabelStudio) -> str:
    """The server URL a client talks to (for messages)."""
    try:
        return str(ls._client_wrapper.get_base_url())
    except AttributeError:  # a future SDK without this wrapper: the message just gets vaguer
        return os.environ.get(ENV_URL, "<LABEL_STUDIO_URL>")


def _api_message(exc: ApiError) -> str:
    """HTTP status + the server's own explanation, without the headers the SDK's str() would include."""
    body = exc.body
    detail: Any = body
    if isinstance(body, dict):
        detail = body.get("validation_errors") or body.get("detail") or body
    text = str(detail)
    return f"HTTP {exc.status_code}: {text[:500]}"


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiError) and exc.status_code in _RETRY_STATUS


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    base_delay: float = 0.5,
    *,
    url: str | None = None,
    what: str = "request",
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Call ``fn()``; on a connection error (or 502/503/504) wait ``base_delay * 2**i`` s (at most 30 s) and retry.

    ``before_retry()`` runs before each retry (a write re-reads the server's state there, so it does not redo what
    already landed); its own connection errors count as a failed attempt. After ``attempts`` failures raises
    LabelStudioUnavailableError("Label Studio at <url> is not answering after N attempts (<what>: <last error>)").
    Any other SDK error becomes a LabelStudioError naming ``what`` and the HTTP status.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    last: BaseException | None = None
    for attempt in range(attempts):
        if attempt:
            delay = min(base_delay * 2 ** (attempt - 1), _MAX_DELAY_S)
            log.warning(
                "Label Studio: %s failed (%s); retry %d/%d in %.1f s", what, _short(last), attempt, attempts - 1, delay
            )
            time.sleep(delay)
        try:
            if attempt and before_retry is not None:
                before_retry()
            return fn()
        except ApiError as exc:
            if not _retriable(exc):
                message = f"Label Studio at {url or '?'}: {what} failed: {_api_message(exc)}"
                raise LabelStudioError(message, status=exc.status_code) from None
            last = exc
        except httpx.TransportError as exc:
            last = exc
    raise LabelStudioUnavailableError(
        f"Label Studio at {url or '?'} is not answering after {attempts} attempts ({what}: {_short(last)})"
    ) from None


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    if isinstance(exc, ApiError):
        return _api_message(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def connect(*, check: bool = True, timeout_s: float = 120.0, attempts: int = 5, base_delay: float = 0.5) -> LabelStudio:
    """A client for ``$LABEL_STUDIO_URL`` with the key in ``$LABEL_STUDIO_API_KEY`` (environment only).

    ``check``: ask ``whoami`` (with retries) so a wrong URL or key fails here with a clear message. ``timeout_s`` is
    the per-request read timeout (an import of 500 tasks with predictions takes ~1 s; a busy server more).
    """
    url = os.environ.get(ENV_URL, "").strip().rstrip("/")
    key = os.environ.get(ENV_API_KEY, "").strip()
    hint = "start one with `python -m pipeline labelstudio serve` and export the two lines it prints"
    if not url:
        raise LabelStudioError(f"{ENV_URL} is not set: {hint}")
    if not key:
        raise LabelStudioError(f"{ENV_API_KEY} is not set: {hint}")
    # max_retries=0: the SDK would retry POSTs blindly (module docstring); with_retries does it safely.
    ls = LabelStudio(base_url=url, api_key=key, timeout=timeout_s, max_retries=0)
    if check:
        try:
            with_retries(ls.users.whoami, attempts, base_delay, url=url, what="whoami")
        except LabelStudioUnavailableError:
            raise
        except LabelStudioError as exc:
            if exc.status in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {url} rejected the key in {ENV_API_KEY} (a legacy token needs "
                    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true at the server's first start)"
                ) from None
            raise
    return ls


# ------------------------------------------------------------------------------------------------------- listing


def iter_tasks(
    ls: LabelStudio,
    project_id: int,
    *,
    fields: str = "all",
    include: str | None = _INDEX_FIELDS,
    page_size: int = PAGE_SIZE,
    attempts: int = 5,
    base_delay: float = 0.5,
) -> Iterator[dict]:
    """Every task of a project as a plain dict with the ``include`` keys (all keys when None), page by page.

    Pages are requested explicitly (the SDK pager's next page is ``page + 1`` on a None page) until a short page or
    the server's 404 past the last page.
    """
    url = base_url(ls)
    keys = include.split(",") if include else None
    seen: set[Any] = set()
    page = 1
    while True:

        def get(page: int = page) -> Any:
            return ls.tasks.list(project=project_id, fields=fields, include=include, page=page, page_size=page_size)

        try:
            pager = with_retries(get, attempts, base_delay, url=url, what=f"list tasks of project {project_id}")
        except LabelStudioError as exc:
            if page > 1 and exc.status == 404:
                return  # past the last page
            raise
        items = pager.items or []
        fresh = 0
        for item in items:
            d = item.dict() if hasattr(item, "dict") else dict(item)
            if d.get("id") in seen:
                continue
            seen.add(d.get("id"))
            fresh += 1
            yield {k: d.get(k) for k in keys} if keys else d
        if items and not fresh:
            # A server (or a proxy) that ignores `page` returns page 1 forever: stop, naming it.
            raise LabelStudioError(
                f"Label Studio at {url}: page {page} of project {project_id}'s tasks holds only tasks of earlier "
                f"pages (it ignores the page parameter?); stopped after {len(seen)} task(s)"
            )
        if len(items) < page_size:
            return
        page += 1


def _instance_id(data: Any) -> int | None:
    value = data.get("instance_id") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def task_index(ls: LabelStudio, project_id: int, *, attempts: int = 5, base_delay: float = 0.5) -> dict[int, dict]:
    """instance_id -> {"id", "total_annotations", "cancelled_annotations", "model_versions"} of the project's tasks.

    Tasks without ``data.instance_id`` are left out. Two tasks of one instance (imported by hand): the lower task id
    is kept and a warning names the duplicates.
    """
    index: dict[int, dict] = {}
    duplicates = 0
    for task in iter_tasks(ls, project_id, attempts=attempts, base_delay=base_delay):
        iid = _instance_id(task.get("data"))
        if iid is None:
            continue
        entry = {
            "id": task["id"],
            "total_annotations": task.get("total_annotations") or 0,
            "cancelled_annotations": task.get("cancelled_annotations") or 0,
            "model_versions": parse_model_versions(task.get("predictions_model_versions")),
        }
        if iid in index:
            duplicates += 1
            if entry["id"] > index[iid]["id"]:
                continue
        index[iid] = entry
    if duplicates:
        log.warning(
            "project %s: %d task(s) repeat an instance_id already in the project; kept the oldest",
            project_id,
            duplicates,
        )
    return index


# ------------------------------------------------------------------------------------------------------- project


def get_or_create_project(
    ls: LabelStudio,
    title: str,
    schema: KeypointSchema,
    document_root: str | os.PathLike[str],
    model_version: str | None = None,
    *,
    image_root: str | os.PathLike[str] | None = None,
    attempts: int = 5,
    base_delay: float = 0.5,
) -> int:
    """The id of the project titled ``title``, created with ``labeling_config(schema)`` when there is none.

    A project found by title must have been made for the same keypoint names (else LabelStudioError: a schema
    change needs a new project). A local-files import storage on ``image_root`` (default
    ``document_root/prepared/images``: the images only; Label Studio serves a local file only through such a storage)
    is attached once, and a poseloop storage of the project on another folder (older versions used
    ``data/prepared``, which exposed the label files) is removed; it is never synced (a sync would turn every
    image file into a task). ``document_root`` must be the server's ``LOCAL_FILES_DOCUMENT_ROOT`` (``serve
    --document-root``) and the paths must be valid on the server's machine.

    The project's ``model_version`` (which predictions annotators see) is set when given and predictions of that
    version exist; the server refuses a version without predictions, so ``send_tasks`` sets it again after import.
    Title: at least 3 characters (server rule). Projects use sequential sampling: tasks are served in import order,
    which is ``rank`` order; Label Studio's "uncertainty sampling" would serve the lowest prediction score (the
    model's mean keypoint confidence) first, close to but not the selection's ranking. The project's instructions
    (``expert_instruction``) are ``config.INSTRUCTIONS``, shown before the first task.

    Long because each API call has its retry beside it; creating the project, its storage and its settings is one
    idempotent sequence.
    """
    url = base_url(ls)
    document_root = Path(document_root).resolve()
    image_root = Path(image_root).resolve() if image_root is not None else document_root / DEFAULT_IMAGE_SUBDIR
    if image_root == document_root or document_root not in image_root.parents:
        raise ValueError(
            f"image_root {image_root} must be a subfolder of the document root {document_root} "
            "(Label Studio refuses a storage on the document root itself)"
        )
    if len(title.strip()) < 3:
        raise ValueError(f"project title {title!r}: Label Studio needs at least 3 characters")

    def retry(fn: Callable[[], T], what: str) -> T:
        return with_retries(fn, attempts, base_delay, url=url, what=what)

    # The title filter matches substrings: compare exactly.
    found = [p for p in retry(lambda: list(ls.projects.list(title=title)), "list projects") if p.title == title]
    if found:
        project = min(found, key=lambda p: p.id)
        if len(found) > 1:
            log.warning("%d projects are titled %r; using the oldest, id %s", len(found), title, project.id)
        full = retry(lambda: ls.projects.get(id=project.id), f"get project {project.id}")
        try:
            names = keypoint_labels(full.label_config or "")
        except ValueError as exc:
            raise LabelStudioError(f"project {title!r} (id {project.id}) was not created by poseloop: {exc}") from None
        if names != list(schema.names):
            raise LabelStudioError(
                f"project {title!r} (id {project.id}) labels keypoints {names}, but the schema has "
                f"{list(schema.names)}: use another project title for this schema"
            )
        project_id = int(project.id)
        # instructions a team wrote in the UI are theirs: only empty ones or poseloop's own are brought up to date
        ours = not full.expert_instruction or full.expert_instruction.startswith(INSTRUCTIONS_START)
        instructions = {"expert_instruction": instructions_html(), "show_instruction": True} if ours else {}
        # the server keeps the config without its trailing newline: compare the text itself
        stale_config = (full.label_config or "").strip() != labeling_config(schema).strip()
        if stale_config or (ours and full.expert_instruction != instructions_html()):
            # made by an earlier version: same keypoints, older controls (a control added since, e.g. "missed
            # person") or older instructions; Label Studio checks that existing annotations still fit the config
            retry(
                lambda: ls.projects.update(id=project_id, label_config=labeling_config(schema), **instructions),
                f"update the labeling config of project {project_id}",
            )
            log.info("project %r (id %d): labeling config and instructions brought up to date", title, project_id)
    else:
        created = retry(
            lambda: ls.projects.create(
                title=title,
                label_config=labeling_config(schema),
                description="poseloop: correct the pre-annotated keypoints of one person per task",
                expert_instruction=instructions_html(),
                show_instruction=True,  # shown before the first task, and behind the editor's info button
                show_collab_predictions=True,
                sampling="Sequential sampling",
            ),
            f"create project {title!r}",
        )
        project_id = int(created.id)
        log.info("created Label Studio project %r (id %d)", title, project_id)

    storages = retry(lambda: list(ls.import_storage.local.list(project=project_id)), "list local storages")
    for storage in storages:
        if storage.title == STORAGE_TITLE and Path(storage.path or "").resolve() != image_root:
            retry(lambda s=storage: ls.import_storage.local.delete(id=s.id), f"remove storage on {storage.path}")
            log.warning(
                "project %d: removed the local-files storage on %s (it served more than the images)",
                project_id,
                storage.path,
            )
    if not any(Path(s.path or "").resolve() == image_root for s in storages):
        retry(
            lambda: ls.import_storage.local.create(
                project=project_id, path=str(image_root), title=STORAGE_TITLE, use_blob_urls=True
            ),
            f"attach local-files storage {image_root}",
        )
    if model_version:
        set_model_version(ls, project_id, model_version, attempts=attempts, base_delay=base_delay)
    return project_id


def find_project(ls: LabelStudio, title: str, *, attempts: int = 5, base_delay: float = 0.5) -> int:
    """The id of the project titled exactly ``title`` (the oldest if several); LabelStudioError when there is none.

    For readers (pull, the simulated annotator), which must not create a project.
    """
    url = base_url(ls)
    projects = with_retries(
        lambda: list(ls.projects.list(title=title)), attempts, base_delay, url=url, what="list projects"
    )
    ids = sorted(int(p.id) for p in projects if p.title == title)  # the server's title filter matches substrings
    if not ids:
        raise LabelStudioError(f"no Label Studio project titled {title!r} at {url} (run the export first)")
    return ids[0]


def set_model_version(
    ls: LabelStudio, project_id: int, model_version: str, *, attempts: int = 5, base_delay: float = 0.5
) -> bool:
    """Show ``model_version``'s predictions to annotators; False when the server has no prediction of it yet."""
    try:
        with_retries(
            lambda: ls.projects.update(id=project_id, model_version=model_version),
            attempts,
            base_delay,
            url=base_url(ls),
            what=f"set model_version of project {project_id}",
        )
    except LabelStudioError as exc:
        if isinstance(exc, LabelStudioUnavailableError) or "model_version" not in str(exc):
            raise
        log.info("project %s: no predictions of %s yet; model_version set after export", project_id, model_version)
        return False
    return True


# -------------------------------------------------------------------------------------------------------- export


def _task_instance(task: Mapping[str, Any]) -> int:
    iid = _instance_id(task.get("data"))
    if iid is None:
        raise ValueError(f"task without an integer data.instance_id: {str(task.get('data'))[:120]}")
    return iid


def _prediction_of(task: Mapping[str, Any], model_version: str) -> dict:
    for p in task.get("predictions") or ():
        if isinstance(p, dict) and p.get("model_version") == model_version:
            return p
    raise ValueError(f"task of instance {_task_instance(task)} has no prediction with model_version {model_version!r}")


def send_tasks(
    ls: LabelStudio,
    project_id: int,
    tasks: Sequence[Mapping[str, Any]],
    model_version: str,
    batch_size: int = 500,
    *,
    prediction_batch_size: int = 5000,
    attempts: int = 5,
    base_delay: float = 1.0,
) -> dict[int, int]:
    """Make every task of ``tasks`` (from ``tasks.instance_to_task``) exist in the project; idempotent.

    Returns instance_id -> task_id for every given task. Tasks are keyed by ``data.instance_id``: one already in the
    project is not imported again. The missing ones are imported in ``batch_size`` batches, in the given order (the
    selection's rank order, which is the order annotators get them). An existing task without any annotation (none
    completed, none skipped) whose predictions do not include ``model_version`` gets the new prediction; the older
    predictions stay (the project's ``model_version``, set here, decides which one the editor pre-loads, and the
    history shows what each model proposed). Annotated or skipped tasks are left alone.

    New predictions for existing tasks go in ``prediction_batch_size`` batches: the server (1.23.2) recounts every
    task of the project after each ``import_predictions`` call (~8 s at 10,000 tasks on 2 cores, ~2 ms per
    prediction on top), so few large calls are much faster than many small ones.

    A connection lost midway: each batch is retried with backoff after re-reading which instances already landed;
    when the server stays away, LabelStudioUnavailableError. Re-running after a restart completes without duplicates.

    Long because each API call has its retry and its resume step beside it: a task sent twice or lost between two
    calls is what the sequence guards against.
    """
    if "," in model_version:
        # The Data Manager joins versions with commas (annotations.parse_model_versions): one with a comma is ambiguous.
        raise ValueError(f"model_version {model_version!r} must not contain a comma")
    if batch_size < 1 or prediction_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {prediction_batch_size}")
    by_instance: dict[int, Mapping[str, Any]] = {}
    for task in tasks:
        iid = _task_instance(task)
        if iid in by_instance:
            raise ValueError(f"two tasks for instance {iid}")
        _prediction_of(task, model_version)  # fail before touching the server
        by_instance[iid] = task
    url = base_url(ls)

    def index() -> dict[int, dict]:
        return task_index(ls, project_id, attempts=attempts, base_delay=base_delay)

    existing = index()
    missing = [t for iid, t in by_instance.items() if iid not in existing]
    imported = 0
    for start in range(0, len(missing), batch_size):
        batch = list(missing[start : start + batch_size])

        def resume(batch: list = batch) -> None:
            present = index()
            batch[:] = [t for t in batch if _task_instance(t) not in present]

        def send(batch: list = batch) -> None:
            if not batch:
                return
            response = ls.projects.import_tasks(id=project_id, request=batch, return_task_ids=True)
            want = sum(len(t.get("predictions") or ()) for t in batch)
            if response.task_count != len(batch) or (response.prediction_count or 0) != want:
                raise LabelStudioError(
                    f"Label Studio at {url}: imported {response.task_count} task(s) with "
                    f"{response.prediction_count} prediction(s) of {len(batch)} with {want}; see its server log"
                )

        with_retries(send, attempts, base_delay, url=url, what=f"import tasks {start}..", before_retry=resume)
        imported += len(batch)

    stale = [
        (entry["id"], by_instance[iid])
        for iid, entry in existing.items()
        if iid in by_instance
        and entry["total_annotations"] == 0
        and entry["cancelled_annotations"] == 0
        and model_version not in entry["model_versions"]
    ]
    for start in range(0, len(stale), prediction_batch_size):
        batch = list(stale[start : start + prediction_batch_size])

        def resume_predictions(batch: list = batch) -> None:
            now = index()
            done = {e["id"] for e in now.values() if model_version in e["model_versions"]}
            batch[:] = [(tid, t) for tid, t in batch if tid not in done]

        def send_predictions(batch: list = batch) -> None:
            if not batch:
                return
            request = []
            for tid, task in batch:
                p = _prediction_of(task, model_version)
                request.append(
                    {"task": tid, "model_version": model_version, "score": p.get("score"), "result": p["result"]}
                )
            response = ls.projects.import_predictions(id=project_id, request=request)
            if response.created != len(request):
                # 1.23.2 drops a prediction that fails its geometry / label validation and answers 201 anyway.
                raise LabelStudioError(
                    f"Label Studio at {url}: kept {response.created} of {len(request)} predictions of "
                    f"{model_version}; the others failed its validation (see its server log)"
                )

        with_retries(
            send_predictions, attempts, base_delay, url=url, what="import predictions", before_retry=resume_predictions
        )
    # The line above the image (data.note: confidence, keypoints to check first) and data.uncertainty belong to the
    # prediction just sent: without this an older task would show the last model's note beside the new dots.
    for tid, task in stale:
        with_retries(
            lambda tid=tid, task=task: ls.tasks.update(id=tid, data=task["data"]),
            attempts,
            base_delay,
            url=url,
            what=f"update the note of task {tid}",
        )

    final = index() if (missing or stale) else existing  # re-read only when something was written
    if by_instance:
        set_model_version(ls, project_id, model_version, attempts=attempts, base_delay=base_delay)
    lost = sorted(set(by_instance) - set(final))
    if lost:
        raise LabelStudioError(
            f"Label Studio at {url}: {len(lost)} task(s) missing after import, e.g. instance {lost[0]}"
        )
    log.info(
        "project %s: %d task(s) imported, %d already there (%d given the prediction of %s)",
        project_id,
        imported,
        len(by_instance) - len(missing),
        len(stale),
        model_version,
    )
    return {iid: int(final[iid]["id"]) for iid in by_instance}


# ---------------------------------------------------------------------------------------------------------- pull


def annotator_emails(ls: LabelStudio, *, attempts: int = 5, base_delay: float = 0.5) -> dict[int, str]:
    """user id -> email of the server's users (annotations name their annotator by id)."""
    users = with_retries(ls.users.list, attempts, base_delay, url=base_url(ls), what="list users")
    return {int(u.id): str(u.email or u.username or u.id) for u in users if u.id is not None}


def project_origin(ls: LabelStudio, project: Any) -> str:
    """``labelstudio:<url>/projects/<id>@<created_at>``: where a record comes from. The creation time tells apart the
    project of a fresh server (new database, ids restarting at 1) from the one of the same id on the old server."""
    created = getattr(project, "created_at", None)
    stamp = created.isoformat() if hasattr(created, "isoformat") else str(created)
    return f"labelstudio:{base_url(ls).rstrip('/')}/projects/{project.id}@{stamp}"


def fetch_annotations(
    ls: LabelStudio,
    project_id: int,
    schema: KeypointSchema,
    *,
    page_size: int = PAGE_SIZE,
    attempts: int = 5,
    base_delay: float = 0.5,
) -> tuple[list[Correction], list[Skip], list[AnnotationProblem], list[int]]:
    """Everything annotators did in the project: (corrections, skips, problems, pending instance ids).

    Rules: ``annotations.collect_task_records`` (every completed annotation of a task is a correction; skipped
    tasks are Skips; pending = exported tasks with neither a usable completed annotation nor a skip, ascending).
    Each correction's ``model_version``: the task's only prediction version; with several, the one of the annotation's
    ``parent_prediction`` (the editor sets it when the annotator started from a prediction), else the project's
    current ``model_version`` when the task has it; else None.
    """
    url = base_url(ls)
    annotators = annotator_emails(ls, attempts=attempts, base_delay=base_delay)
    project = with_retries(lambda: ls.projects.get(id=project_id), attempts, base_delay, url=url, what="get project")
    project_version = getattr(project, "model_version", None) or None
    cache: dict[int, str | None] = {}

    def model_version_of(task: Mapping[str, Any], annotation: Mapping[str, Any]) -> str | None:
        versions = parse_model_versions(task.get("predictions_model_versions"))
        if len(versions) == 1:
            return versions[0]
        parent = annotation.get("parent_prediction")
        if isinstance(parent, int):
            if parent not in cache:
                pred = with_retries(
                    lambda: ls.predictions.get(id=parent),
                    attempts,
                    base_delay,
                    url=url,
                    what=f"get prediction {parent}",
                )
                cache[parent] = getattr(pred, "model_version", None)
            return cache[parent]
        return project_version if project_version in versions else None

    tasks = iter_tasks(
        ls,
        project_id,
        include=_FETCH_FIELDS,
        page_size=page_size,
        attempts=attempts,
        base_delay=base_delay,
    )
    records = collect_task_records(
        tasks, schema, annotators=annotators, model_version_of=model_version_of, origin=project_origin(ls, project)
    )
    log.info(
        "project %s: %d correction(s), %d skip(s), %d problem(s), %d pending",
        project_id,
        len(records.corrections),
        len(records.skips),
        len(records.problems),
        len(records.pending),
    )
    return records.corrections, records.skips, records.problems, records.pending
