"""The results log (``docs/results/``): one Markdown entry per measurement, written by the
command that measured it, with the command line, the revision, the machine and the figures."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

LOG_DIR_ENV = "ITC_RESULTS_LOG"  # where entries go; default: docs/results of the checkout


def log_dir() -> Path:
    """``$ITC_RESULTS_LOG``, else ``docs/results`` of the repository this code runs from."""
    env = os.environ.get(LOG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "docs" / "results"


def revision() -> str:
    """The checkout's commit (``+dirty`` when it has uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine() -> str:
    """Cores, memory and accelerator of this machine, in one line."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = float("nan")
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the log line is informative only
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, Python {platform.python_version()}"


def write_entry(title: str, body: str, command: str | None = None) -> Path:
    """Write one entry (``<UTC time>-<slug>.md``) and return its path. ``body`` is Markdown
    holding the figures; ``command`` defaults to this process's command line."""
    now = _dt.datetime.now(_dt.timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "entry"
    path = log_dir() / f"{now:%Y-%m-%dT%H%M%S}-{slug}.md"
    command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    text = (
        f"# {title}\n\n"
        f"- command: `{command}`\n"
        f"- revision: {revision()}\n"
        f"- machine: {machine()}\n"
        f"- date: {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"{body.rstrip()}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
