"""Start demo/app.py in a subprocess on a free port and wait until it answers (browser test, load bench)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """The demo exited or never answered; the message ends with its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def start(bundle: Path, tmp: Path, timeout: float = 120.0, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`demo/app.py --bundle bundle [extra...]` with its files under `tmp`; (process, URL) once the page answers."""
    return launch([str(ROOT / "demo" / "app.py"), "--bundle", str(bundle), "--examples", str(tmp / "examples"),
                   *extra], ROOT, tmp, timeout)


def launch(args: list[str], cwd: Path, tmp: Path, timeout: float = 120.0, env: dict[str, str] | None = None,
           log_name: str = "server.log", python: str = sys.executable) -> tuple[subprocess.Popen, str]:
    """`python args... --port N` (a Gradio app) run in `cwd` on a free port, its files and log under `tmp`,
    `env` added to the environment; (process, URL) once the page answers. Also starts the Space's app.py
    (`python`: e.g. a fresh virtual environment's)."""
    port = free_port()
    log = tmp / log_name
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)  # the demo's own downloads (tempfile) go here
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "TMPDIR": str(tmp / "tmp"), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [python, *args, "--port", str(port)]
    name = Path(args[0]).name
    url = f"http://127.0.0.1:{port}/"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with {proc.returncode} before serving; "
                              f"its output ends:\n{tail(log)}")
        if time.monotonic() > deadline:
            stop(proc)
            raise ServerError(f"{name} did not answer on {url} within {timeout:.0f} s; "
                              f"its output ends:\n{tail(log)}")
        time.sleep(0.5)
    return proc, url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
