"""A content-addressed store of stage outputs under the workspace.

A stage's output folder is named by a hash of everything that determines it (its config
section, the keys of its inputs, a format version). Re-running with the same inputs finds the
finished folder and reuses it; a changed input gives a new folder and never overwrites the
old one. Folders appear only when complete (written under a temporary name, then renamed),
so a run killed half-way leaves nothing that a later run could mistake for a result.

Each finished entry lists its files and their sizes in ``.entry.json``; an entry whose files no
longer match (deleted or truncated by hand, a full disk) is moved aside to
``.<key>.damaged-<time>`` with a warning naming both paths, and built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel

log = logging.getLogger("ausynth")

ENTRY = ".entry.json"


@dataclass(frozen=True)
class StoredItem:
    """A finished stage output: where it is and the key that named it."""

    path: Path
    key: str


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short hash of JSON-able parts (pydantic models included), stable across runs."""
    blob = json.dumps(_jsonable(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (an OS file lock): one process at a time works on ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        yield


def _file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ENTRY}


def seal(folder: Path) -> None:
    """Record the folder's files and sizes, so later reads can tell a damaged entry."""
    (folder / ENTRY).write_text(json.dumps(_file_sizes(folder), indent=1))


def damage(folder: Path) -> str | None:
    """What is wrong with a sealed entry (a missing or resized file), or None when it is whole."""
    try:
        expected = json.loads((folder / ENTRY).read_text())
    except (OSError, ValueError):
        return f"its file list {ENTRY} is missing or unreadable"
    found = _file_sizes(folder)
    for name, size in expected.items():
        if name not in found:
            return f"{name} is missing"
        if found[name] != size:
            return f"{name} has {found[name]} bytes where {size} were written"
    return None


def set_aside(final: Path, reason: str) -> None:
    """Move a damaged entry out of the way (kept, never deleted), with a warning naming both places.

    Another run may have moved it first: then there is nothing left to move."""
    aside = final.with_name(f".{final.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")
    try:
        os.replace(final, aside)
    except FileNotFoundError:
        return
    log.warning("store entry %s is damaged (%s): moved to %s and built again", final, reason, aside)


def cached_folder(root: Path, kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return ``root/kind/key``, building it with ``build(tmp_folder)`` unless a whole entry exists.

    Two runs that build the same entry at once both build it; the first to finish wins and the
    other's copy (identical, by its key) is dropped, so an entry that a run may be reading is
    never replaced under it.
    """
    final = Path(root) / kind / key
    if final.is_dir():
        reason = damage(final)
        if reason is None:
            return final
        set_aside(final, reason)
    staged = final.with_name(f".{key}.{uuid.uuid4().hex[:8]}.done")
    with atomic_folder(staged) as tmp:
        build(tmp)
        seal(tmp)
    try:
        os.rename(staged, final)  # fails if another run's entry is already there
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        if not final.is_dir():
            raise
    return final
