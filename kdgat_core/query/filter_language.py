"""The filter language of the TUI's `/` and the CLI's `--where`: one grammar, compiled to one DuckDB WHERE clause.

    dataset=hcrl_sa f1>0.9 status!=failed          terms side by side are ANDed
    (dataset=hcrl_sa | dataset=set_01) max(val_f1)>0.99
    dataset in (hcrl_sa, set_01)   dataset=hcrl_sa,set_01   model_size not in (student)
    name~curriculum  !student  kd=yes  lr>=0.001  val_f1@20>0.9  "some words"

A term is `key op value` (ops `= == != > >= < <= ~ !~`, `in (...)`, `not in (...)`); a bare word matches run names
and tags (case-insensitive), `!word` or `!(...)` negates; `|` is OR, `&` or a space AND; AND binds tighter than OR.
A key is a column (`dataset`, `params.train.lr`, a unique param leaf `lr`, `tags.x`, an alias like `size`, `kd`) or a
metric expression (`f1`, `max(val_f1)`, `val_loss@10`). Text compares case-insensitively; a number against a text
column (params are text) compares as numbers; `!=` keeps runs without a value. Nothing here touches the DB.

>>> compile_filter("(dataset=hcrl_sa | dataset in (set_01)) max(val_f1)>0.99").metrics
[MetricExpr(key='val_f1', agg='max', step=None)]
>>> compile_filter("f1>")
Traceback (most recent call last):
...
kdgat_core.query.filter_language.FilterError: 'f1>' has no value after '>'; write e.g. f1>0.9.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from kdgat_core.config import KdgatError
from kdgat_core.query.connection import pa
from kdgat_core.query.expressions import FUNCTIONS, MetricExpr, parse_metric

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
# What a bare word searches (lower-cased, joined by spaces); the TUI keeps the same text as a column, HAYSTACK.
HAYSTACK = "__haystack"
HAYSTACK_COLUMNS = (
    "run_name",
    "run_id",
    "dataset",
    "stage",
    "model_size",
    "use_kd",
    "status",
    "teacher_run_id",
    "slurm_job_id",
    "model_arch",
)
OPS = ("!~", ">=", "<=", "!=", "==", "=", ">", "<", "~")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
_KEY = re.compile(r"[A-Za-z_][\w./-]*")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_STOP = set(" \t\n()|&")


class FilterError(KdgatError):
    """A filter the user typed cannot be applied; the message is one sentence."""


@dataclass(frozen=True)
class Term:
    key: str | None  # None: free text
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Node:
    kind: str  # and | or | not | term
    children: tuple = ()
    term: Term | None = None


@dataclass
class Filter:
    """A parsed filter: `sql(types)` is its WHERE clause over a table with those columns."""

    text: str
    root: Node | None
    metrics: list[MetricExpr] = field(default_factory=list)  # expressions from the history the table must carry

    def sql(self, types: Mapping[str, str] | Sequence[str]) -> str:
        """DuckDB boolean SQL; `types` maps column -> 'num' | 'text' | 'time' (a list of names: all text)."""
        if self.root is None:
            return "TRUE"
        kinds = dict(types) if isinstance(types, Mapping) else {c: "text" for c in types}
        return f"coalesce(({_node_sql(self.root, kinds)}), false)"


def compile_filter(text: str) -> Filter:
    """Parse a filter; a mistake is a FilterError of one sentence."""
    tokens = _tokens(text or "")
    parser = _Parser(tokens, text or "")
    root = parser.expr() if tokens else None
    if parser.i < len(tokens):
        raise FilterError(f"unexpected '{tokens[parser.i][1]}' in the filter; check the parentheses")
    metrics: list[MetricExpr] = []
    for term in _terms(root):
        if term.key is not None:
            expr = _metric_key(term.key)
            if expr is not None and expr.from_history and expr not in metrics:
                metrics.append(expr)
    return Filter(text or "", root, metrics)


def conjuncts(text: str) -> list[tuple[str, Filter]]:
    """The top-level AND terms of a filter, each as (its text, a Filter of its own): the TUI leaves a bad one out."""
    flt = compile_filter(text)
    if flt.root is None:
        return []
    nodes = flt.root.children if flt.root.kind == "and" else (flt.root,)
    return [(_node_text(n), Filter(_node_text(n), n, flt.metrics)) for n in nodes]


def _node_text(node: Node) -> str:
    if node.kind == "term" and node.term is not None:
        t = node.term
        if t.key is None:
            return t.values[0]
        return f"{t.key}{t.op}{','.join(t.values)}"
    if node.kind == "not":
        return "!" + _node_text(node.children[0])
    joiner = " | " if node.kind == "or" else " "
    return "(" + joiner.join(_node_text(c) for c in node.children) + ")"


def column_types(schema: pa.Schema) -> dict[str, str]:
    """An Arrow schema -> the kinds `Filter.sql` needs."""
    import pyarrow as pa

    out = {}
    for f in schema:
        t = f.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            out[f.name] = "num"
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            out[f.name] = "time"
        elif pa.types.is_boolean(t):
            out[f.name] = "bool"
        else:
            out[f.name] = "text"
    return out


# -- tokens and parsing -----------------------------------------------------------------------------------------------
def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text): kind is ( ) | & ! or term (a whole `key op value`, `key in (...)` or a bare word)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()|&":
            out.append((c, c))
            i += 1
        elif c == "!" and i + 1 < n and text[i + 1] in "(!":
            out.append(("!", "!"))
            i += 1
        else:
            j, term = _read_term(text, i)
            out.append(("term", term))
            i = j
    return out


def _read_term(text: str, i: int) -> tuple[int, str]:
    n = len(text)
    m = _KEY.match(text, i)
    if m:
        j = m.end()
        if text[i:j].lower() in FUNCTIONS and j < n and text[j] == "(":  # max(val_f1): the parenthesis is the key's
            close = text.find(")", j)
            if close < 0:
                raise FilterError(f"'{text[i:]}' misses a closing parenthesis")
            j = close + 1
        at = re.match(r"@-?\d+", text[j:])
        if at:
            j += at.end()
        k = j
        while k < n and text[k] == " ":
            k += 1
        low = text[k : k + 7].lower()
        for word in ("not in", "in"):
            if low.startswith(word) and text[k + len(word) : k + len(word) + 1] in (" ", "("):
                rest = k + len(word)
                while rest < n and text[rest] == " ":
                    rest += 1
                if rest < n and text[rest] == "(":
                    close = text.find(")", rest)
                    if close < 0:
                        raise FilterError(f"the list after '{text[i:j]} {word}' misses its ')'")
                    return close + 1, text[i:j] + f" {word.replace(' ', '_')} " + text[rest : close + 1]
        for op in OPS:
            if text.startswith(op, k):
                v = k + len(op)
                if v < n and text[v] in "\"'":
                    end = text.find(text[v], v + 1)
                    if end < 0:
                        raise FilterError(f"a quote after '{text[i:v]}' is never closed")
                    return end + 1, text[i:v] + text[v : end + 1]
                e = v
                while e < n and text[e] not in _STOP:
                    e += 1
                return e, text[i:e]
    if text[i] in "\"'":
        end = text.find(text[i], i + 1)
        if end < 0:
            raise FilterError("a quote in the filter is never closed")
        return end + 1, text[i : end + 1]
    e = i
    while e < n and text[e] not in _STOP:
        e += 1
    return e, text[i:e]


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def expr(self) -> Node:
        parts = [self.conj()]
        while self.peek() == "|":
            self.i += 1
            if self.peek() in (None, ")", "|"):
                raise FilterError("'|' needs a term on both sides")
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else Node("or", tuple(parts))

    def conj(self) -> Node:
        parts = [self.unary()]
        while self.peek() not in (None, ")", "|"):
            if self.peek() == "&":
                self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Node("and", tuple(parts))

    def unary(self) -> Node:
        kind = self.peek()
        if kind == "!":
            self.i += 1
            return Node("not", (self.unary(),))
        if kind == "(":
            self.i += 1
            if self.peek() == ")":
                raise FilterError("empty parentheses in the filter")
            node = self.expr()
            if self.peek() != ")":
                raise FilterError("a '(' in the filter is never closed")
            self.i += 1
            return node
        if kind == "term":
            word = self.tokens[self.i][1]
            self.i += 1
            return _term_node(word)
        if kind is None:
            raise FilterError("the filter ends where a term should follow")
        raise FilterError(f"unexpected '{self.tokens[self.i][1]}' in the filter")


def _term_node(word: str) -> Node:
    m = re.match(r"^(?P<key>\S+) (?P<op>in|not_in) \((?P<list>.*)\)$", word, re.S)
    if m:
        values = tuple(_unquote(v.strip()) for v in m.group("list").split(",") if v.strip())
        if not values:
            raise FilterError(f"the list in '{word.replace('_', ' ')}' is empty")
        return Node("term", term=Term(m.group("key"), "=" if m.group("op") == "in" else "!=", values))
    km = _KEY.match(word)
    if km:
        j = km.end()
        if word[:j].lower() in FUNCTIONS and word[j : j + 1] == "(":
            j = word.find(")", j) + 1
        at = re.match(r"@-?\d+", word[j:])
        if at:
            j += at.end()
        for op in OPS:
            if word.startswith(op, j):
                raw = word[j + len(op) :]
                if raw == "":
                    raise FilterError(f"'{word}' has no value after '{op}'; write e.g. {word[:j]}{op}0.9.")
                op = "=" if op == "==" else op
                values = (_unquote(raw),) if raw[:1] in "\"'" else tuple(v for v in raw.split(",") if v != "")
                return Node("term", term=Term(word[:j], op, values))
    if word.startswith("!") and len(word) > 1:
        return Node("not", (Node("term", term=Term(None, "~", (_unquote(word[1:]),))),))
    return Node("term", term=Term(None, "~", (_unquote(word),)))


def _unquote(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def _terms(node: Node | None) -> Iterator[Term]:
    if node is None:
        return
    if node.kind == "term" and node.term is not None:
        yield node.term
    for child in node.children:
        yield from _terms(child)


def _metric_key(key: str) -> MetricExpr | None:
    if "(" in key or "@" in key:
        try:
            return parse_metric(key)
        except KdgatError as exc:
            raise FilterError(str(exc).rstrip(".")) from None
    return None


# -- SQL --------------------------------------------------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def resolve_key(key: str, kinds: Mapping[str, str]) -> str:
    """The column a filter key names; an unknown key is one sentence naming a few known ones."""
    expr = _metric_key(key)
    if expr is not None:
        if expr.text in kinds:
            return expr.text
        raise FilterError(f"'{key}' needs the run history, which this view does not load")
    low = key.lower()
    for cand in (key, low, COLUMN_ALIASES.get(low, ""), f"metrics.{key}", f"params.{key}", f"tags.{key}"):
        if cand and cand in kinds:
            return cand
    leaf = [c for c in kinds if c.startswith("params.") and c.endswith("." + key)]
    if len(leaf) == 1:
        return leaf[0]
    if len(leaf) > 1:
        raise FilterError(f"'{key}' is ambiguous ({', '.join(sorted(leaf)[:4])}); give the dotted key")
    shown = ", ".join(sorted(c for c in kinds if not c.startswith(("__", "params.", "tags.", "metrics.")))[:10])
    raise FilterError(f"unknown column '{key}' (try: {shown}, params.<key>, metrics.<key>)")


def _node_sql(node: Node, kinds: Mapping[str, str]) -> str:
    if node.kind == "and":
        return " AND ".join(f"({_node_sql(c, kinds)})" for c in node.children)
    if node.kind == "or":
        return " OR ".join(f"({_node_sql(c, kinds)})" for c in node.children)
    if node.kind == "not":
        return f"NOT coalesce(({_node_sql(node.children[0], kinds)}), false)"
    assert node.term is not None
    return _term_sql(node.term, kinds)


def _haystack(kinds: Mapping[str, str]) -> str:
    if HAYSTACK in kinds:
        return _q(HAYSTACK)
    parts = [f"coalesce(CAST({_q(c)} AS VARCHAR), '')" for c in HAYSTACK_COLUMNS if c in kinds]
    return f"lower(concat_ws(' ', {', '.join(parts)}))" if parts else "''"


def _term_sql(term: Term, kinds: Mapping[str, str]) -> str:
    if term.key is None:
        return f"contains({_haystack(kinds)}, {_lit(term.values[0].lower())})"
    col = resolve_key(term.key, kinds)
    kind = kinds[col]
    c = _q(col)
    op, values = term.op, list(term.values)
    if op in ("~", "!~"):
        pattern = ",".join(values)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise FilterError(f"bad pattern '{pattern}': {exc}") from None
        m = f"regexp_matches(CAST({c} AS VARCHAR), {_lit(pattern)}, 'i')"
        return f"NOT {m}" if op == "!~" else m
    if kind == "time":
        raise FilterError(f"{col}: filter times with ~ (e.g. {col}~2025-01)")
    if kind == "num":
        try:
            nums = [float(v) for v in values]
        except ValueError:
            raise FilterError(f"'{','.join(values)}' is not a number, and {col} holds numbers") from None
        lhs, rhs = f"CAST({c} AS DOUBLE)", [repr(v) if v == v else "'NaN'::DOUBLE" for v in nums]
    else:
        low = [v.lower() for v in values]
        if col == "use_kd" and all(v in _TRUE | _FALSE for v in low):
            low = ["true" if v in _TRUE else "false" for v in low]
        if op in (">", ">=", "<", "<=") and len(low) == 1 and _NUMBER.match(low[0]):
            lhs, rhs = f"TRY_CAST({c} AS DOUBLE)", [repr(float(low[0]))]
        else:
            lhs, rhs = f"lower(CAST({c} AS VARCHAR))", [_lit(v) for v in low]
    if len(rhs) > 1:
        if op not in ("=", "!="):
            raise FilterError(f"a list of values ({col}{op}a,b) works with =, != or in only")
        m = f"{lhs} IN ({', '.join(rhs)})"
        return f"coalesce(NOT ({m}), true)" if op == "!=" else m
    if op == "!=":
        return f"coalesce({lhs} <> {rhs[0]}, true)"  # a missing value is "not equal" too
    if op in (">", ">=", "<", "<=") and not rhs[0].startswith("'"):
        return f"({lhs} {op} {rhs[0]} AND NOT isnan({lhs}))"  # DuckDB orders NaN above every number
    return f"{lhs} {op} {rhs[0]}"
