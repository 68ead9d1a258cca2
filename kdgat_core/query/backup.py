"""`kdgat backup`: a consistent copy of the tracking DB while writers are active, via SQLite's online backup API.

Uses Python's sqlite3, opened read-only (`mode=ro`, so a missing file is never created). Do not call this in a process
that also has the same file open through DuckDB's scanner: two SQLite copies in one process do not see each other's
locks. The copy is written next to DEST, checked with `PRAGMA integrity_check`, then moved into place.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
import urllib.parse
from pathlib import Path

from kdgat_core.config import KdgatError
from kdgat_core.query.connection import MLFLOW_TABLES, resolve_db
from kdgat_core.safe_io import SQLITE_COMPANIONS, os_reason

PAGES_PER_STEP = 1024  # 4 MB per step with 4 KB pages: writers get the lock back between steps
MAX_RESTARTS = 5  # a writer committing mid-copy restarts the backup; after this many, copy in one step


class _Restarted(Exception):
    pass


def backup_db(tracking_uri: str | None, dest: str | os.PathLike, force: bool = False) -> dict:
    src_db = resolve_db(tracking_uri)
    dest = _check_dest(Path(dest), src_db.path, force)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    t0 = time.perf_counter()
    uri = "file:" + urllib.parse.quote(str(src_db.path)) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise KdgatError(f"Cannot open {src_db.path} read-only: {exc}.") from None
    try:
        _check_mlflow_store(src, src_db.path)
        pages = _copy(src, tmp)
        check = sqlite3.connect(str(tmp))
        try:
            result = [r[0] for r in check.execute("PRAGMA integrity_check").fetchall()]
        finally:
            check.close()
        if result != ["ok"]:
            raise KdgatError(
                f"The copy failed PRAGMA integrity_check ({'; '.join(result[:3])}); {dest} was not written."
            )
        os.replace(tmp, dest)
    except sqlite3.Error as exc:  # DatabaseError too: "database disk image is malformed" on a damaged file
        if "locked" in str(exc) or "busy" in str(exc):
            raise KdgatError(f"The tracking database {src_db.path} stayed locked by a writer; try again.") from None
        raise KdgatError(f"Backup of {src_db.path} failed: {exc}; {dest} was not written.") from None
    except OSError as exc:
        raise KdgatError(f"Cannot write {dest}: {os_reason(exc)}.") from None
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    return {
        "source": str(src_db.path),
        "dest": str(dest),
        "pages": pages,
        "bytes": dest.stat().st_size,
        "seconds": time.perf_counter() - t0,
    }


def _check_dest(dest: Path, source: Path, force: bool) -> Path:
    """A regular file (or a new one) that is not the source or one of its companion files."""
    dest = dest.expanduser().absolute()
    resolved = dest.resolve() if dest.exists() or dest.is_symlink() else dest
    if any(resolved == source.with_name(source.name + s) for s in SQLITE_COMPANIONS):
        raise KdgatError(
            "Backup destination is the tracking database itself (or one of its files); choose another file."
        )
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise KdgatError(f"Cannot write {dest}: {os_reason(exc)}.") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise KdgatError(f"Backup destination {dest} is a directory; give a file name inside it.")
        if not stat.S_ISREG(st.st_mode):
            raise KdgatError(f"Backup destination {dest} is not a regular file (a device, pipe or socket).")
        if not force:
            raise KdgatError(f"{dest} already exists; use --force to overwrite it.")
    if not dest.parent.is_dir():
        raise KdgatError(f"Folder {dest.parent} does not exist.")
    return dest


def _check_mlflow_store(src: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file that is not an MLflow store (or whose schema cannot be read: a damaged file)."""
    try:
        names = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise KdgatError(f"{path} cannot be read as SQLite ({exc}); nothing was written.") from None
    missing = [t for t in MLFLOW_TABLES if t not in names]
    if missing:
        raise KdgatError(
            f"{path} is a SQLite file but not an MLflow tracking database (no {', '.join(missing)} "
            f"table{'s' if len(missing) > 1 else ''}); nothing was written."
        )


def _copy(src: sqlite3.Connection, tmp: Path) -> int:
    """Copy in steps; if writers keep restarting it, fall back to one step (holds the read lock for the copy)."""
    restarts = [0]
    last_remaining: list[int | None] = [None]
    total = [0]

    def progress(status: int, remaining: int, count: int) -> None:
        total[0] = count
        if last_remaining[0] is not None and remaining > last_remaining[0]:
            restarts[0] += 1
            if restarts[0] > MAX_RESTARTS:
                raise _Restarted()
        last_remaining[0] = remaining

    for pages in (PAGES_PER_STEP, -1):
        tmp.unlink(missing_ok=True)
        dst = sqlite3.connect(str(tmp))
        try:
            src.backup(dst, pages=pages, progress=progress if pages > 0 else None, sleep=0.05)
            return total[0] or dst.execute("PRAGMA page_count").fetchone()[0]
        except _Restarted:
            continue
        finally:
            dst.close()
    raise KdgatError("Backup kept restarting while writers were active; try again.")
