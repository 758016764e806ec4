"""A content-addressed store of stage outputs under the workspace.

A stage's output folder is named by a hash of everything that determines it (its config
section, the keys of its inputs, a format version). Re-running with the same inputs finds the
finished folder and reuses it; a changed input gives a new folder and never overwrites the
old one. Folders appear only when complete (written under a temporary name, then renamed),
so a run killed half-way leaves nothing that a later run could mistake for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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


def cached_folder(root: Path, kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return ``root/kind/key``, building it with ``build(tmp_folder)`` unless it exists.

    Two runs that build the same entry at once both build it; the first to finish wins and the
    other's copy (identical, by its key) is dropped, so an entry that a run may be reading is
    never replaced under it.
    """
    final = Path(root) / kind / key
    if final.is_dir():
        return final
    staged = final.with_name(f".{key}.{uuid.uuid4().hex[:8]}.done")
    with atomic_folder(staged) as tmp:
        build(tmp)
    try:
        os.rename(staged, final)  # fails if another run's entry is already there
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        if not final.is_dir():
            raise
    return final
