"""Which MLflow schema revision a tracking DB is at, and what to do when it is not the one MLflow here writes.

Stdlib only (the reader side must not import mlflow): the revisions come from the installed MLflow's migration
scripts, read as text; without MLflow installed, from the list below (MLflow 3.17.2). States and their remedies:
current; older (known revision, not the head: `mlflow db upgrade`); newer (a revision MLflow here does not know:
written by a newer MLflow); half-created (MLflow tables but no alembic revision: an interrupted creation).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

# MLflow 3.17.2's revisions, oldest first (tests check this list against the installed MLflow's scripts)
BUNDLED_REVISIONS: tuple[str, ...] = (
    "451aebb31d03", "90e64c465722", "181f10493468", "df50e92ffc5e", "7ac759974ad8", "89d4b8295536", "2b4d017a5e9b",
    "cfd24bdc0731", "0a8213491aaa", "728d730b5ebd", "27a6a02d2cf1", "84291f40a231", "a8c4a736bde6", "39d1c3be5f05",
    "c48cb773bb87", "bd07f7e963c5", "0c779009ac13", "cc1f77228345", "97727af70f4d", "3500859a5d39", "7f2a7d5fae7d",
    "2d6e25af4d3e", "acf3f17fdcc7", "867495a8f9d4", "5b0e9adcef9c", "4465047574b1", "f5a4f2784254", "0584bdc529eb",
    "400f98739977", "6953534de441", "bda7b8c39065", "cbc13b556ace", "770bee3ae1dd", "a1b2c3d4e5f6", "de4033877273",
    "1a0cddfcaa16", "534353b11cbc", "71994744cf8e", "3da73c924c2f", "bf29a5ff90ea", "1bd49d398cd23", "b7c8d9e0f1a2",
    "5d2d30f0abce", "c9d4e5f6a7b8", "2c33131f4dae", "d3e4f5a6b7c8", "d0e1f2a3b4c5", "c8d9e0f1a2b3", "1b5f0d9ad7c1",
    "e1f2a3b4c5d6", "76601a5f987d", "c3d6457b6d8a", "a5b4c3d2e1f0", "ae8bbe7743c9", "7d34483879f0", "da6fb0208061",
    "89d3d66ed43f", "b7e4c1a90f23", "a8b9c0d1e2f3", "c1d2e3f4a5b6", "c3d9e7f1a2b4", "6f8d9c3b2a1e", "1971f2d9a75b",
    "17e22815139b", "b7e2c1a4d9f3", "75868b020152", "dc11669786a5",
)  # fmt: skip
# The tables kdgat reads; with alembic_version they make a file an MLflow tracking store.
CORE_TABLES: tuple[str, ...] = ("experiments", "runs", "tags", "params", "metrics", "latest_metrics")
CURRENT, OLDER, NEWER, HALF, FOREIGN, EMPTY = "current", "older", "newer", "half-created", "foreign", "empty"

_REVISION = re.compile(r"^revision\s*(?::\s*str\s*)?=\s*['\"]([0-9a-zA-Z_]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.M)


@dataclass(frozen=True)
class Revisions:
    known: tuple[str, ...]  # oldest first
    head: str
    mlflow_version: str


@functools.lru_cache(maxsize=1)
def revisions() -> Revisions:
    """The installed MLflow's migration chain (read as text, not imported), else the bundled list."""
    version = "3.17.2"
    try:
        spec = importlib.util.find_spec("mlflow")  # finds the package without importing it
        if spec is None:
            raise ImportError("mlflow is not installed")
        package = Path(next(iter(spec.submodule_search_locations or [])))
        found = re.search(r"VERSION\s*=\s*['\"]([^'\"]+)", (package / "version.py").read_text(encoding="utf-8"))
        version = found.group(1) if found else "(unknown version)"
        folder = package / "store" / "db_migrations" / "versions"
        parent: dict[str, str | None] = {}
        for f in folder.glob("*.py"):
            text = f.read_text(encoding="utf-8", errors="replace")
            rev, down = _REVISION.search(text), _DOWN.search(text)
            if rev and down:
                value = re.findall(r"['\"]([0-9a-zA-Z_]+)['\"]", down.group(1))
                parent[rev.group(1)] = value[0] if value else None
        heads = set(parent) - {p for p in parent.values() if p}
        if len(heads) == 1:
            chain: list[str] = []
            node: str | None = heads.pop()
            while node is not None and node in parent:
                chain.append(node)
                node = parent[node]
            return Revisions(tuple(reversed(chain)), chain[0], version)
    except (ImportError, OSError, StopIteration, TypeError, ValueError):
        pass
    return Revisions(BUNDLED_REVISIONS, BUNDLED_REVISIONS[-1], version)


def classify(tables: set[str], revision: str | None) -> str:
    """One of CURRENT, OLDER, NEWER, HALF, FOREIGN, EMPTY for a file's table names and its alembic revision."""
    if not tables:
        return EMPTY
    if not tables & {"alembic_version", "experiments", "runs"}:
        return FOREIGN
    missing = [t for t in CORE_TABLES if t not in tables]
    if not revision:
        return HALF
    if revision == BUNDLED_REVISIONS[-1] and not missing:
        return CURRENT  # the common case, without reading MLflow's migration scripts (~0.1 s)
    revs = revisions()
    if revision not in revs.known:
        return NEWER
    if missing:
        return HALF
    return CURRENT if revision == revs.head else OLDER


def advice(state: str, path: object, revision: str | None, tables: set[str] | None = None) -> str:
    """One sentence for a state other than CURRENT: what the file is and what to do."""
    revs = revisions()
    if state == EMPTY:
        return f"{path} has no tables, so it is not an MLflow tracking database."
    if state == FOREIGN:
        return f"{path} is a SQLite file but not an MLflow tracking database."
    if state == NEWER:
        return (
            f"{path} was written by a newer MLflow (schema revision {revision} is unknown to MLflow "
            f"{revs.mlflow_version} installed here); upgrade MLflow (pip install -U mlflow) to use it, do not downgrade it."
        )
    if state == HALF:
        missing = [t for t in CORE_TABLES if tables is not None and t not in tables]
        if not revision:
            return (
                f"{path} has a half-created MLflow schema (no alembic revision: its creation was interrupted); "
                "move it aside and let `kdgat run` create the database again."
            )
        return (
            f"{path} has a half-migrated MLflow schema (revision {revision}, tables missing: {', '.join(missing)}); "
            f"back it up, then run `mlflow db upgrade sqlite:///{path}`."
        )
    if state == OLDER:
        return (
            f"{path} has an older MLflow schema (revision {revision}, MLflow {revs.mlflow_version} writes "
            f"{revs.head}); back it up, then run `mlflow db upgrade sqlite:///{path}` before writing to it."
        )
    return ""
