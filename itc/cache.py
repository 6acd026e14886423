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


def checkpoint_fingerprint(model: str) -> str:
    """Identifies the weights a model path holds now (their files' names, sizes and times), so
    a result made with a since retrained checkpoint is not taken for a current one; a hub id
    or other name is kept as it is."""
    path = Path(model)
    if not path.is_dir():
        return model
    stats = [
        f"{f.relative_to(path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
        for f in sorted(path.rglob("*"))
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt") or f.name == "config.json")
    ]
    return fingerprint(str(path.resolve()), *stats)


def _register_resolver() -> None:
    """``${itc_cache:sub/dir}`` in configs: a path under :func:`cache_dir`."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("itc_cache"):
        OmegaConf.register_new_resolver("itc_cache", lambda sub="": str(cache_dir() / sub))


_register_resolver()
