"""Pretrained keras.applications weights: from Keras' cache, else downloaded, never a hang when offline.

Why here: 06's backbones and 05's InceptionV3 KID both need ImageNet files
from the same place. Keras' own download has no timeout, so offline it can
wait for minutes; here the host is probed first (a few seconds), the
transfer has a socket timeout, and the caller gets one line on what failed
so it can say what to do before any training starts.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from pathlib import Path

NETWORK_TIMEOUT_S = 5.0  # offline detection; also the socket timeout of the download
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def keras_models_dir() -> Path:
    """Where Keras caches application weights: $KERAS_HOME/models or ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def fetch(relative: str) -> tuple[Path, str | None]:
    """(where the file under WEIGHTS_URL is cached, None) once it is there, else (that path, why not)."""
    name, url = Path(relative).name, WEIGHTS_URL + relative
    target = keras_models_dir() / name
    if target.is_file():
        return target, None
    why = unreachable(url)
    if why is None:
        why = download(name, url, target.parent.parent)
    return target, why


def unreachable(url: str, timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """None when the URL's host accepts a connection within `timeout` seconds, else why not."""
    host = urllib.parse.urlsplit(url).hostname
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"cannot reach {host}: {err}")

    thread = threading.Thread(target=probe, daemon=True)  # name lookup can hang longer than the timeout
    thread.start()
    thread.join(timeout + 1)
    return outcome[0] if outcome else f"{host} did not answer within {timeout:.0f} s"


def download(name: str, url: str, cache_dir: Path) -> str | None:
    """Fetch the file into cache_dir/models with Keras; None on success, else the error in one line."""
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S * 6)  # a stalled transfer fails instead of hanging
    try:
        keras.utils.get_file(name, url, cache_subdir="models", cache_dir=str(cache_dir))
        return None
    except Exception as err:  # Keras wraps HTTP and URL errors in a bare Exception
        return " ".join(str(err).split())
    finally:
        socket.setdefaulttimeout(previous)
