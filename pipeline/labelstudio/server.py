"""A local Label Studio server for annotators, tests and benchmarks (``python -m pipeline labelstudio serve``).

``LocalLabelStudio`` runs the real server (``label-studio start`` from this interpreter's bin folder) bound to one
host and port, in its own process group so ``stop()`` ends it with every child. Everything it keeps lives in the data
folder (default ``.labelstudio/``, git-ignored): the SQLite database, media, the server's generated ``SECRET_KEY`` in
``.env``, its log ``server.log``, and ``credentials.json`` (mode 600) with the admin user, password and API token.

The token is generated once and handed to the first start (``LABEL_STUDIO_USER_TOKEN``, which only applies when the
admin user is created, together with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``, which only applies to the
organisation created at that first start); later starts reuse it from the credentials file, so
``LABEL_STUDIO_API_KEY`` stays valid across restarts. The token is a 40-hex-digit string because Django REST
framework's token column holds at most 40 characters.

Other settings (docs/DESIGN.md §11): no version check at start (it calls PyPI), no Sentry, no analytics, no sign-up
without an invite link, local files served from ``document_root`` (Label Studio still serves a file only through a
local-files storage attached to a project, see ``client.get_or_create_project``).

Pitfall handled here: when the port is taken, ``label-studio start`` silently moves to the next free port; we refuse
to start instead, so a client never talks to another server that happens to listen on the port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".labelstudio")
DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@poseloop.local"
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "server.log"
# The first start runs ~200 migrations (~25-30 s on 2 cores); a busy machine can take several times that.
DEFAULT_START_TIMEOUT_S = 180.0


class LabelStudioServerError(RuntimeError):
    """The local server could not start, or died; the message ends with the tail of its log."""


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else "(server log is empty)"


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port left in TIME_WAIT by our own previous server is free for the dev server too.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for tests; another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def label_studio_executable() -> Path:
    """``label-studio`` next to this interpreter (the project's venv), never whatever PATH finds first."""
    exe = Path(sys.executable).parent / "label-studio"
    if not exe.is_file():
        raise LabelStudioServerError(
            f"{exe} not found: label-studio is not installed in this environment (make setup installs it)"
        )
    return exe


class LocalLabelStudio:
    """One local Label Studio server process.

    Usage::

        server = LocalLabelStudio(data_dir=".labelstudio", document_root="data", port=8080)
        server.start()            # blocks until the API answers with our token
        server.url, server.token  # -> LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY
        server.stop()

    or ``with LocalLabelStudio(...) as server:``. ``start()`` after ``stop()`` restarts on the same data (same token).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        document_root: str | os.PathLike[str] = "data",
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        username: str = DEFAULT_USERNAME,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.document_root = Path(document_root).resolve()
        self.port = int(port)
        self.host = host
        self.username = username
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle = None
        self.last_start_s: float | None = None  # seconds the last start() took, for benchmarks and tests

    # -------------------------------------------------------------------------------------------------- properties

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / CREDENTIALS_FILE

    @property
    def token(self) -> str:
        """The admin's API token (created with the data folder; read from ``credentials.json`` afterwards)."""
        return self._credentials()["token"]

    @property
    def password(self) -> str:
        """The admin's password for logging in to the web UI."""
        return self._credentials()["password"]

    def _credentials(self) -> dict[str, str]:
        """Read ``credentials.json``, creating it (mode 600) with a fresh password and token the first time."""
        path = self.credentials_path
        if path.is_file():
            creds = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(creds, dict) or not {"username", "password", "token"} <= creds.keys():
                raise LabelStudioServerError(f"{path} is not a poseloop credentials file; move it away to start over")
            return creds
        if (self.data_dir / "label_studio.sqlite3").exists():
            # A database without our credentials was made by someone else: its admin has another token.
            raise LabelStudioServerError(
                f"{self.data_dir} holds a Label Studio database but no {CREDENTIALS_FILE}: it was not created by "
                "poseloop, so its API token is unknown; use another --data-dir"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        creds = {"username": self.username, "password": secrets.token_urlsafe(18), "token": secrets.token_hex(20)}
        # Created with mode 600 from the start: never world-readable, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(creds, f)
        return creds

    def make_private(self) -> None:
        """The data folder is the user's alone (0700) and so is every file already in it (0600): the sqlite database
        holds the API token in clear, and a 0644 file in a 0755 folder would undo the 0600 of credentials.json."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        for path in self.data_dir.rglob("*"):
            if not path.is_symlink():
                os.chmod(path, 0o700 if path.is_dir() else path.stat().st_mode & 0o700)

    def environment(self) -> dict[str, str]:
        """The server process's environment: ours plus the settings of the module docstring."""
        creds = self._credentials()
        env = {k: v for k, v in os.environ.items() if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")}
        env.update(
            {
                "LABEL_STUDIO_USERNAME": creds["username"],
                "LABEL_STUDIO_PASSWORD": creds["password"],
                "LABEL_STUDIO_USER_TOKEN": creds["token"],
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                # --data-dir alone still makes the server print (and create) ~/.local/share/label-studio first.
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "COLLECT_ANALYTICS": "false",
                "SENTRY_DSN": "",  # an empty DSN switches Sentry off (the default sends errors to Heartex)
                "FRONTEND_SENTRY_DSN": "",
                "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1",  # the log shows the server's own lines as they happen
            }
        )
        return env

    # ------------------------------------------------------------------------------------------------- lifecycle

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalLabelStudio:
        """Start the server and wait until its API answers with our token; raises LabelStudioServerError otherwise."""
        if self.is_running():
            return self
        if not self.document_root.is_dir():
            raise LabelStudioServerError(f"document root {self.document_root} is not a folder")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise LabelStudioServerError(f"--data-dir {self.data_dir} is a file, not a folder")
        if self.data_dir.is_dir() and any(self.data_dir.iterdir()) and not self.credentials_path.is_file():
            # make_private would chmod every file in it: never do that to a folder that is not ours
            raise LabelStudioServerError(
                f"--data-dir {self.data_dir} is not empty and has no {CREDENTIALS_FILE}: not a poseloop Label Studio "
                "data folder; give a new or empty folder (nothing in this one was changed)"
            )
        if _port_in_use(self.host, self.port):
            raise LabelStudioServerError(
                f"port {self.port} on {self.host} is in use (another Label Studio?); choose another --port "
                "(label-studio itself would silently move to the next free port)"
            )
        env = self.environment()
        self.make_private()
        cmd = [
            str(label_studio_executable()),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        started = time.monotonic()
        # held open for the life of the process; 0600 like everything in the data folder
        self._log_handle = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self._log_handle.write(f"\n==== poseloop: starting Label Studio on {self.url} ====\n".encode())
        self._log_handle.flush()
        self._process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the server and all its children
            cwd=self.data_dir,
            umask=0o077,  # what the server creates (its sqlite database holds the API token in clear) is ours only
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.last_start_s = time.monotonic() - started
        log.info("Label Studio is up on %s after %.1f s", self.url, self.last_start_s)
        return self

    def _wait_ready(self, started: float) -> None:
        """Poll /health, then /api/current-user/whoami with our token, until both answer or the time is up."""
        deadline = started + self.start_timeout_s
        health = f"{self.url}/health"
        whoami = urllib.request.Request(
            f"{self.url}/api/current-user/whoami", headers={"Authorization": f"Token {self.token}"}
        )
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with code {self._process.returncode} while starting; "
                    f"end of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(health, timeout=5) as r:
                    healthy = r.status == 200
                if healthy:
                    with urllib.request.urlopen(whoami, timeout=10) as r:
                        if r.status == 200:
                            return
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise LabelStudioServerError(
                        f"Label Studio on {self.url} answers but rejects the token in {self.credentials_path} "
                        f"(HTTP {exc.code}): the database was created with another token; use a fresh --data-dir"
                    ) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise LabelStudioServerError(
                    f"Label Studio on {self.url} did not answer within {self.start_timeout_s:.0f} s; "
                    f"end of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout_s``; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            try:
                pgid = os.getpgid(process.pid)
            except ProcessLookupError:
                pgid = None
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pgid, signal.SIGKILL)
                    process.wait(timeout=timeout_s)
                # The group may outlive its leader (a child still running): make sure it is gone too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            else:
                process.wait(timeout=timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> LocalLabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()


def serve_command(port: int, data_dir: Path, document_root: Path) -> int:
    """``python -m pipeline labelstudio serve``: run the server until Ctrl-C; print how to point the pipeline at it."""
    server = LocalLabelStudio(data_dir=data_dir, document_root=document_root, port=port)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # `kill` of this command stops the server too, instead of orphaning it

    signal.signal(signal.SIGTERM, on_term)
    # One try around everything after the Popen: a Ctrl-C at any moment (even between two prints) stops the server.
    try:
        print(f"starting Label Studio on {server.url} (data in {server.data_dir}, log in {server.log_path}) ...")
        server.start()
        print(f"Label Studio is up after {server.last_start_s:.1f} s: {server.url}")
        print(f"web UI login: {server.username}, password in {server.credentials_path}")
        print("point the pipeline at it (in the shell that runs dvc / make):")
        print(f"export LABEL_STUDIO_URL={server.url}")
        print(f"export LABEL_STUDIO_API_KEY={server.token}")
        print("Ctrl-C stops the server.", flush=True)
        code = server.wait()
        print(f"error: Label Studio exited with code {code}; end of {server.log_path}:\n{_log_tail(server.log_path)}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping Label Studio ...", flush=True)
        return 0
    except LabelStudioServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
