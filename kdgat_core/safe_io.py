"""Writing files the user named without losing data: refuse the tracking DB, never overwrite without --force, write
through a temporary file and a rename, and turn every OS error into one sentence.

Stdlib only: every command that writes (`-o`, `backup`, `synth`, `ingest --out`, `graphs --cache-dir`) uses it.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from kdgat_core.config import KdgatError, resolve_tracking_uri, sqlite_path

# SQLite's companion files: overwriting one of them corrupts or loses the database beside it
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
# A name that becomes one path component: no separators, no `..`, no leading dot or dash, printable
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")


def os_reason(exc: OSError) -> str:
    """`Permission denied`, `No such file or directory`: the OS's words without Python's decoration."""
    return exc.strerror or str(exc)


def tracking_db_files(tracking_uri: str | None = None) -> set[Path]:
    """The tracking DB in force (flag, env, kdgat.toml, default) and its -wal/-shm/-journal, resolved."""
    try:
        path = sqlite_path(resolve_tracking_uri(tracking_uri).value, must_exist=False)
    except KdgatError:
        return set()
    if path is None:
        return set()
    base = _resolved(path)
    return {base.with_name(base.name + suffix) for suffix in SQLITE_COMPANIONS}


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return path.expanduser().absolute()


def is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def check_output_path(
    output: Path, force: bool = False, tracking_uri: str | None = None, what: str = "--output"
) -> Path:
    """The path to write, or a KdgatError: never the tracking DB (or its companions, or any SQLite file), never an
    existing file without `force`, never a directory, device or other special file."""
    target = _resolved(Path(output))
    protected = tracking_db_files(tracking_uri)
    if target in protected or any(target.name == p.name + s for p in protected for s in SQLITE_COMPANIONS if s):
        raise KdgatError(f"{what} {output} is the tracking database (or one of its files); choose another file.")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise KdgatError(f"Cannot write {output}: {os_reason(exc)}.") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise KdgatError(f"{what} {output} is a directory; give a file name.")
        if not stat.S_ISREG(st.st_mode):
            raise KdgatError(f"{what} {output} is not a regular file (a device, pipe or socket); give a file name.")
        if is_sqlite_file(target):
            raise KdgatError(f"{what} {output} is a SQLite database; kdgat never overwrites one, choose another file.")
        if not force:
            raise KdgatError(f"{output} already exists; use --force to overwrite it.")
    if not target.parent.is_dir():
        raise KdgatError(f"Cannot write {output}: folder {target.parent} does not exist.")
    return target


def atomic_write(target: Path, write: Callable[[Path], object], shown: object = None) -> None:
    """Call `write(tmp)` on a temporary file beside `target`, then rename it over `target` (readers never see half a
    file, and a failed write leaves the old file as it was)."""
    shown = target if shown is None else shown
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise KdgatError(f"Cannot write {shown}: {os_reason(exc)}.") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:
            pass
        os.replace(tmp, target)
    except OSError as exc:
        raise KdgatError(f"Cannot write {shown}: {os_reason(exc)}.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_output(
    text: str, output: Path, force: bool = False, tracking_uri: str | None = None, what: str = "--output"
) -> Path:
    """Write `text` to a user-named output file, safely (see `check_output_path` and `atomic_write`)."""
    target = check_output_path(output, force=force, tracking_uri=tracking_uri, what=what)
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"), shown=output)
    return target


def ensure_writable_dir(folder: Path, what: str) -> Path:
    """Create `folder` (and parents) or say in one sentence why not; refuse a file where a folder should be."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise KdgatError(f"{what} {folder} is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdgatError(f"Cannot create {what} {folder}: {os_reason(exc)}.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KdgatError(f"Cannot write into {what} {folder}: permission denied.")
    return folder


def check_name(name: str, what: str = "name") -> str:
    """A name that becomes one folder or file name: letters, digits, `_ . + -`; no separators, no `..`."""
    if not _NAME.fullmatch(name or "") or ".." in name:
        raise KdgatError(
            f"Invalid {what} '{name}': use letters, digits, '_', '-', '.' or '+' (no '/', no '..', not starting with"
            " '.' or '-')."
        )
    return name


def check_finite_positive(value: float, what: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise KdgatError(f"{what} must be a positive finite number, not {value}.")
    return value
