"""The `/` filter of the Runs screen: free text and `key<op>value` terms, evaluated over an Arrow table.

`dataset=hcrl_sa f1>0.9 status!=failed` keeps hcrl_sa runs with F1 above 0.9 that did not fail; a bare word
matches names and tags (case-insensitive); `!word` inverts it (k9s habit); `key~regex` matches a pattern;
`dataset=hcrl_sa,hcrl_ch` means either. Terms are ANDed. Nothing here touches the database.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from kdgat_core.config import METRIC_PREFIX, PARAM_PREFIX, TAG_PREFIX

# Words people type for columns whose stored names differ.
COLUMN_ALIASES: dict[str, str] = {
    "size": "model_size",
    "kd": "use_kd",
    "name": "run_name",
    "id": "run_id",
    "run": "run_id",
    "job": "slurm_job_id",
    "teacher": "teacher_run_id",
    "precision": "precision_",
    "arch": "model_arch",
}
_TERM = re.compile(r"^(?P<key>[A-Za-z_][\w./-]*?)\s*(?P<op>!~|>=|<=|!=|==|=|>|<|~)\s*(?P<value>.*)$")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}

HAYSTACK = "__haystack"  # lower-cased names and tags joined, built once per load for fast free-text search


class FilterError(ValueError):
    """A filter the user typed cannot be applied; the message is shown under the filter box."""


@dataclass(frozen=True)
class Term:
    key: str | None  # None: free text
    op: str
    value: str
    negate: bool = False


def parse(text: str, columns: list[str]) -> list[Term]:
    """Split a filter string into terms; unknown columns are an error that names the known ones."""
    known = set(columns)
    return [_parse_word(word, columns, known) for word in _words(text)]


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"cannot read the filter: {str(exc).lower()}") from None


def _parse_word(word: str, columns: list[str], known: set[str]) -> Term:
    m = _TERM.match(word)
    if m and m.group("value") != "":
        key = resolve_column(m.group("key"), known)
        if key is None:
            shown = ", ".join(sorted(c for c in columns if not c.startswith("__"))[:12])
            raise FilterError(f"unknown column '{m.group('key')}' (try: {shown}, ...)")
        return Term(key, m.group("op").replace("==", "="), m.group("value"))
    if word.startswith("!") and len(word) > 1:
        return Term(None, "~", word[1:], negate=True)
    return Term(None, "~", word)


def resolve_column(name: str, known: set[str]) -> str | None:
    low = name.lower()
    aliased = COLUMN_ALIASES.get(low, "")
    for candidate in (name, low, aliased, METRIC_PREFIX + name, PARAM_PREFIX + name, TAG_PREFIX + name):
        if candidate and candidate in known:
            return candidate
    return None


def mask(table: pa.Table, text: str) -> pa.ChunkedArray | None:
    """Boolean mask of the rows `text` keeps; None when the filter is empty. A bad term raises FilterError."""
    keep, problem = lenient_mask(table, text)
    if problem:
        raise FilterError(problem)
    return keep


def lenient_mask(table: pa.Table, text: str) -> tuple[pa.ChunkedArray | None, str | None]:
    """(mask of the rows the good terms keep or None, one sentence about the first bad term or None).

    A bad term is left out rather than emptying the table: while `/stage=fusion` is half typed the rows stay."""
    try:
        words = _words(text)
    except FilterError as exc:
        return None, f"filter ignored: {exc}"
    columns, known = table.column_names, set(table.column_names)
    result, problem = None, None
    for word in words:
        try:
            m = _term_mask(table, _parse_word(word, columns, known))
        except FilterError as exc:
            problem = problem or f"'{word}' ignored: {exc}"
            continue
        result = m if result is None else pc.and_kleene(result, m)
    return (None if result is None else pc.fill_null(result, False)), problem


def _term_mask(table: pa.Table, term: Term):
    if term.key is None:
        if HAYSTACK not in table.column_names:
            raise FilterError("free-text search is not available on this table")
        m = pc.match_substring(table[HAYSTACK], term.value.lower())
        return pc.invert(m) if term.negate else m
    col = table[term.key]
    typ = col.type
    op, raw = term.op, term.value
    if op in ("~", "!~"):
        try:
            re.compile(raw)
        except re.error as exc:
            raise FilterError(f"bad pattern '{raw}': {exc}") from None
        m = pc.match_substring_regex(pc.cast(col, pa.string()), raw, ignore_case=True)
        return pc.invert(m) if op == "!~" else m
    if pa.types.is_boolean(typ):
        value = _parse_bool(raw, term.key)
        return _compare(col, op, pa.scalar(value), term.key, ordered=False)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        try:
            values = [float(v) for v in raw.split(",")]
        except ValueError:
            raise FilterError(f"'{raw}' is not a number, and {term.key} holds numbers") from None
        if len(values) > 1:
            return _isin(pc.cast(col, pa.float64()), pa.array(values), op, term.key)
        return _compare(pc.cast(col, pa.float64()), op, pa.scalar(values[0]), term.key)
    if pa.types.is_timestamp(typ):
        raise FilterError(f"{term.key}: filter times with ~ (e.g. {term.key}~2025-01)")
    text_col = pc.utf8_lower(pc.cast(col, pa.string()))
    values = [v.lower() for v in raw.split(",")]
    if term.key == "use_kd" and all(v in _TRUE | _FALSE for v in values):
        values = ["true" if v in _TRUE else "false" for v in values]
    if len(values) > 1:
        return _isin(text_col, pa.array(values), op, term.key)
    numeric = _maybe_float(values[0])
    if op in (">", ">=", "<", "<=") and numeric is not None:
        # params arrive as strings: compare them as numbers when the user compares with a number
        return _compare(_to_float(col), op, pa.scalar(numeric), term.key)
    return _compare(text_col, op, pa.scalar(values[0]), term.key)


def _to_float(col):
    # TRY_CAST semantics: strings that are not numbers become null and drop out of the comparison
    as_text = pc.cast(col, pa.string())
    ok = pc.match_substring_regex(as_text, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
    cleaned = pc.if_else(ok, as_text, pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.float64())


def _maybe_float(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _parse_bool(raw: str, key: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise FilterError(f"{key} is yes or no, not '{raw}'")


def _compare(col, op: str, value, key: str, ordered: bool = True):
    fn = {
        "=": pc.equal,
        "!=": pc.not_equal,
        ">": pc.greater,
        ">=": pc.greater_equal,
        "<": pc.less,
        "<=": pc.less_equal,
    }[op]
    if not ordered and op not in ("=", "!="):
        raise FilterError(f"{key} can only be compared with = or !=")
    m = fn(col, value)
    if op == "!=":
        # a missing value is "not equal" too: status!=failed keeps runs without a status
        m = pc.fill_null(m, True)
    return m


def _isin(col, values: pa.Array, op: str, key: str):
    if op not in ("=", "!="):
        raise FilterError(f"a list of values ({key}{op}a,b) works with = or != only")
    m = pc.is_in(col, value_set=values)
    return pc.invert(m) if op == "!=" else m
