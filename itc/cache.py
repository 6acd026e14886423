"""Where the project keeps what it builds (the embedded world's models)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ITC_CACHE_DIR``, else ``~/.cache/itc``."""
    root = os.environ.get("ITC_CACHE_DIR") or Path.home() / ".cache" / "itc"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts: str | bytes) -> str:
    """A short stable hash of strings or bytes (used to key cached builds)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _register_resolver() -> None:
    """``${itc_cache:sub/dir}`` in configs: a path under :func:`cache_dir`."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("itc_cache"):
        OmegaConf.register_new_resolver("itc_cache", lambda sub="": str(cache_dir() / sub))


_register_resolver()
