"""Talking to the Hugging Face hub: one cheap reachability probe shared by models and data.

huggingface_hub retries a failed request five times with back-off (about 25 s offline, longer
for models); probing first lets an offline run fail in seconds with a one-line message.
Torch-free.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0


def offline_mode() -> bool:
    """The user asked for the local cache only (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(
        os.environ.get(k, "0").lower() not in ("", "0", "false", "no")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when a download is worth trying: offline mode (the cache decides), a proxy (a
    direct probe would mislead), or the hub endpoint answers a TCP connect."""
    if offline_mode():
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout_s).close()
    except OSError:
        return False
    return True
