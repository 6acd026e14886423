"""Where the project keeps what it builds (the embedded world's models)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

BUILD_INFO = "build_info.json"  # written last into a keyed entry: its presence marks it built


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


def cache_entry(name: str, key: Sequence[str | bytes] = ()) -> Path:
    """Where the cache keeps ``name`` (a path under :func:`cache_dir`, e.g. ``toy/policy``):
    ``<name>-<fingerprint(*key)>``, or ``<name>`` itself without a key. Nothing is built."""
    return cache_dir() / (f"{name}-{fingerprint(*key)}" if key else name)


def _has_build_info(path: Path) -> bool:
    return (path / BUILD_INFO).exists()


def cached_build(
    path: Path,
    build: Callable[[Path], object],
    *,
    what: str,
    is_built: Callable[[Path], bool] = _has_build_info,
    resume: bool = False,
) -> Path:
    """The cache entry ``path`` (:func:`cache_entry`), built first when ``is_built`` says it
    is not (by default: it has no ``build_info.json``).

    A file lock beside it (``<name>.lock``) keeps two processes from building at once;
    ``build`` writes the entry into ``<name>.tmp``, which then replaces ``path`` by a rename,
    so a reader never sees half an entry. The temporary folder starts empty, unless
    ``resume``: then an interrupted build's leftovers are kept for ``build`` to resume from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if is_built(path):
            return path
        log.warning("Building %s (once; cached in %s)", what, path)
        tmp = path.with_name(path.name + ".tmp")
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(exist_ok=True)
        build(tmp)
        shutil.rmtree(path, ignore_errors=True)  # a stale entry (is_built said so)
        tmp.rename(path)
    return path


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
