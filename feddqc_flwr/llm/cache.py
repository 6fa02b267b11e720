"""Where converted weights live, and how a folder there is written exactly once."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Where converted weights live (never in git): $FEDDQC_CACHE or ~/.cache/feddqc."""
    return Path(os.environ.get("FEDDQC_CACHE", Path.home() / ".cache" / "feddqc"))


def write_folder_once(target: Path, write: Callable[[Path], None]) -> None:
    """`write` into a temporary sibling, then rename it to `target`: readers never see a half-written
    folder, and of two processes writing at once one wins and the other's copy is dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    tmp.chmod(0o755)
    try:
        write(tmp)
        tmp.rename(target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
