"""Raw CAN captures -> canonical parquet: can-train-and-test CSV, HCRL Car-Hacking originals, SocketCAN candump logs.

Input: `<raw dir>/<split folder>/<recording>.<csv|txt|log>` (or any files plus `--split`). Output:
`<root>/<dataset>/<split>__<recording>.parquet`, written to a temp file and renamed, and skipped when the output
already came from the same source file (size, mtime, format, label): running ingest twice changes nothing.
Malformed lines are counted and named (file:line: reason); with strict=True the first one stops the ingest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from kdgat_core.config import KdgatError, dataset_spec, resolve_data_root
from kdgat_core.data.canonical import RECORDING_SEPARATOR, canonical_table, recording_file_name, write_parquet_atomic
from kdgat_core.data.synthetic import LABEL_SIDECAR_SUFFIX, RAW_FORMATS
from kdgat_core.safe_io import ensure_writable_dir

CAPTURE_SUFFIXES = (".csv", ".txt", ".log")
SOURCE_METADATA_KEY = b"kdgat.source"
MAX_ID = 0x1FFFFFFF  # 29-bit extended CAN id
MAX_PAYLOAD_BYTES = 64  # CAN FD; the window graphs use the first 8
# The payload lengths a CAN (0-8) or CAN FD frame can carry: an 11-byte payload is a corrupt line
PAYLOAD_LENGTHS = frozenset({*range(9), 12, 16, 20, 24, 32, 48, 64})
# --strict: a timestamp further back than this from the previous line is a corrupt line, not clock jitter
MAX_BACKWARDS_S = 3600.0
CTT_HEADER = ("timestamp", "arbitration_id", "data_field", "attack")
MAX_PROBLEMS_KEPT = 20  # per file: the first few malformed lines are reported by name, the rest counted

_CANDUMP = re.compile(r"^\(\s*([^)]+)\)\s+(\S+)\s+([0-9A-Fa-f]+)#(#?)(\S*)(?:\s+(\S+))?\s*$")
_HCRL_TXT = re.compile(r"^Timestamp:\s*(\S+)\s+ID:\s*([0-9A-Fa-f]+)\s+\S+\s+DLC:\s*(\d+)\s*((?:[0-9A-Fa-f]{2}\s*)*)$")
_HEX = re.compile(r"^[0-9A-Fa-f]*$")


class MalformedLine(ValueError):
    """One raw line that cannot be read; the message is the reason."""


@dataclass
class IngestResult:
    source: str  # relative to the raw folder
    output: Path
    split: str
    recording: str
    format: str
    messages: int = 0
    attacks: int = 0
    skipped: int = 0
    status: str = "written"  # written | up to date | skipped (empty)
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Line parsers: (timestamp, id, payload hex upper-case, label) or MalformedLine
# ----------------------------------------------------------------------------------------------------------------------
def _timestamp(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise MalformedLine(f"timestamp '{text}' is not a number") from None
    if not math.isfinite(t):
        raise MalformedLine(f"timestamp '{text}' is not a finite number")
    if t < 0:
        raise MalformedLine(f"timestamp '{text.strip()}' is negative")
    return t


def _can_id(text: str) -> int:
    s = text.strip()
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    if not s or not _HEX.match(s):
        raise MalformedLine(f"CAN id '{text.strip()}' is not hexadecimal")
    value = int(s, 16)
    if value > MAX_ID:
        raise MalformedLine(f"CAN id '{text.strip()}' is larger than 29 bits")
    return value


def _payload(text: str) -> str:
    s = text.replace(" ", "").strip()
    if len(s) % 2 or not _HEX.match(s):
        raise MalformedLine(f"payload '{text.strip()}' is not whole hexadecimal bytes")
    if len(s) > 2 * MAX_PAYLOAD_BYTES:
        raise MalformedLine(f"payload '{text.strip()}' is longer than {MAX_PAYLOAD_BYTES} bytes")
    if len(s) // 2 not in PAYLOAD_LENGTHS:
        raise MalformedLine(f"payload '{text.strip()}' has {len(s) // 2} bytes, not a CAN or CAN FD frame length")
    return s.upper()


def _label(text: str, normal: tuple[str, ...] = ("0",), attack: tuple[str, ...] = ("1",)) -> int:
    s = text.strip()
    if s in normal:
        return 0
    if s in attack:
        return 1
    raise MalformedLine(f"label '{s}' is not one of {', '.join(normal + attack)}")


ParsedLine = tuple[float, int, str, int]  # timestamp, CAN id, payload hex, label


def parse_ctt(line: str) -> ParsedLine:
    """can-train-and-test: `timestamp,arbitration_id,data_field,attack`."""
    fields = line.split(",")
    if len(fields) != 4:
        raise MalformedLine(f"expected 4 comma-separated columns, found {len(fields)}")
    return _timestamp(fields[0]), _can_id(fields[1]), _payload(fields[2]), _label(fields[3])


def parse_hcrl(line: str) -> ParsedLine:
    """HCRL Car-Hacking: `Timestamp,CAN ID,DLC,DATA[0],...,DATA[DLC-1],Flag` (or the `Timestamp: ... ID: ...` text)."""
    if line.startswith("Timestamp:"):
        m = _HCRL_TXT.match(line.strip())
        if not m:
            raise MalformedLine("not a 'Timestamp: ... ID: ... DLC: ...' line")
        data = m.group(4).split()
        dlc = int(m.group(3))
        if dlc != len(data):
            raise MalformedLine(f"DLC {dlc} disagrees with the {len(data)} data bytes")
        return _timestamp(m.group(1)), _can_id(m.group(2)), _payload("".join(data)), 0
    fields = [f.strip() for f in line.split(",")]
    if len(fields) < 4:
        raise MalformedLine(f"expected at least 4 comma-separated columns, found {len(fields)}")
    try:
        dlc = int(fields[2])
    except ValueError:
        raise MalformedLine(f"DLC '{fields[2]}' is not a whole number") from None
    if not 0 <= dlc <= 8:
        raise MalformedLine(f"DLC {dlc} is outside 0..8")
    data = fields[3:-1]
    if len(data) != dlc:
        raise MalformedLine(f"DLC {dlc} disagrees with the {len(data)} data bytes")
    if any(len(b) != 2 for b in data):
        raise MalformedLine("data bytes must be two hexadecimal digits each")
    return _timestamp(fields[0]), _can_id(fields[1]), _payload("".join(data)), _label(fields[-1], ("R",), ("T",))


def parse_candump(line: str) -> ParsedLine:
    """SocketCAN `candump -l`: `(1698232894.363802) can0 153#208010FF00FFB05E` (`ID#R` remote, `ID##F<data>` FD)."""
    m = _CANDUMP.match(line.strip())
    if not m:
        raise MalformedLine("not a candump '(timestamp) interface ID#DATA' line")
    ts, _iface, can_id, fd, data, _flag = m.groups()
    if not fd and data[:1] in ("R", "r"):
        data = ""  # remote frame: no payload
    elif fd:
        data = data[1:]  # the FD flags nibble
    return _timestamp(ts), _can_id(can_id), _payload(data), 0


PARSERS: dict[str, Callable[[str], ParsedLine]] = {"csv": parse_ctt, "hcrl": parse_hcrl, "candump": parse_candump}
assert tuple(PARSERS) == RAW_FORMATS


def detect_format(first_line: str) -> str | None:
    s = first_line.strip()
    if s.lower().replace(" ", "").startswith("timestamp,arbitration_id"):
        return "csv"
    if s.startswith("("):
        return "candump"
    if s.startswith("Timestamp:") or s.count(",") >= 3:
        return "hcrl"
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------------
def find_captures(raw: Path) -> list[Path]:
    if raw.is_file():
        return [raw]
    if not raw.is_dir():
        raise KdgatError(f"Raw capture folder {raw} does not exist.")
    files = sorted(
        p
        for p in raw.rglob("*")
        if p.is_file()
        and p.suffix.lower() in CAPTURE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(raw).parts)
    )
    if not files:
        raise KdgatError(f"No captures (*.csv, *.txt, *.log) under {raw}.")
    return files


def _source_stamp(path: Path, fmt: str, label: int) -> str:
    st = path.stat()
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": fmt, "label": label}, sort_keys=True)


def _existing_stamp(out: Path) -> str | None:
    if not out.is_file():
        return None
    try:
        meta = pq.read_schema(out).metadata or {}
    except Exception:  # an unreadable output is rewritten
        return None
    value = meta.get(SOURCE_METADATA_KEY)
    return value.decode() if value else None


def _lines(path: Path, advance: Callable[[int], None] | None) -> Iterator[tuple[int, str]]:
    # utf-8-sig: a byte-order mark (Windows tools write one) is not part of the first line
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        pending = 0
        for number, line in enumerate(fh, start=1):
            pending += len(line)
            if advance and pending > 1 << 20:
                advance(pending)
                pending = 0
            yield number, line.rstrip("\r\n")
        if advance and pending:
            advance(pending)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line
    return ""


def _sidecar_labels(path: Path) -> list[int] | None:
    side = path.with_name(path.name + LABEL_SIDECAR_SUFFIX)
    if not side.is_file():
        return None
    out = []
    for number, text in enumerate(side.read_text().splitlines(), start=1):
        if text.strip() not in ("0", "1"):
            raise KdgatError(f"{side}:{number}: label '{text.strip()}' is not 0 or 1.")
        out.append(int(text))
    return out


def ingest_file(
    path: Path,
    rel: str,
    out: Path,
    split: str,
    fmt: str = "auto",
    label: int = 0,
    strict: bool = False,
    advance: Callable[[int], None] | None = None,
    force: bool = False,
) -> IngestResult:
    """Convert one capture; see the module docstring."""
    first = _first_line(path)
    result = IngestResult(rel, out, split, out.name[len(split) + 2 : -len(".parquet")], fmt)
    if not first:
        if strict:
            raise KdgatError(f"{rel} is empty.")
        result.status = "skipped (empty)"
        if advance:
            advance(path.stat().st_size)
        return result
    if fmt == "auto":
        fmt = detect_format(first) or ""
        if not fmt:
            raise KdgatError(
                f"{rel}: cannot tell the capture format from its first line; pass --format ({', '.join(RAW_FORMATS)})."
            )
    result.format = fmt
    stamp = _source_stamp(path, fmt, label)
    if not force and _existing_stamp(out) == stamp:
        result.status = "up to date"
        if advance:
            advance(path.stat().st_size)
        meta = pq.read_metadata(out)
        result.messages = meta.num_rows
        return result

    parse = PARSERS[fmt]
    side = _sidecar_labels(path) if fmt == "candump" else None
    ts: list[float] = []
    ids: list[int] = []
    data: list[str] = []
    labels: list[int] = []
    frame = -1  # index of the non-empty line (a candump sidecar has one label per frame line)
    for number, line in _lines(path, advance):
        if not line.strip():
            continue
        frame += 1
        if frame == 0 and fmt == "csv" and tuple(c.strip().lower() for c in line.split(",")) == CTT_HEADER:
            continue
        try:
            t, i, d, y = parse(line)
            if strict and ts and t < ts[-1] - MAX_BACKWARDS_S:
                raise MalformedLine(f"timestamp {t:.6f} is {ts[-1] - t:.0f} s before the previous line's")
        except MalformedLine as exc:
            result.skipped += 1
            where = f"{rel}:{number}: {exc}"
            if strict:
                raise KdgatError(where + " (--strict stops at the first malformed line).") from None
            if len(result.problems) < MAX_PROBLEMS_KEPT:
                result.problems.append(where)
            continue
        if fmt == "candump":
            y = side[frame] if side is not None and frame < len(side) else label
        ts.append(t)
        ids.append(i)
        data.append(d)
        labels.append(y)
    if side is not None and len(side) != frame + 1:
        raise KdgatError(f"{rel}{LABEL_SIDECAR_SUFFIX} has {len(side)} labels for {frame + 1} frame lines.")
    if not ts:
        raise KdgatError(
            f"{rel} has no readable CAN messages ({result.skipped} malformed lines"
            + (f", first: {result.problems[0]}" if result.problems else "")
            + ")."
        )
    table = canonical_table(ts, ids, data, labels, rel)
    write_parquet_atomic(table, out, {SOURCE_METADATA_KEY.decode(): stamp})
    result.messages = len(ts)
    result.attacks = int(sum(labels))
    return result


def plan(dataset: str, raw: Path, out_root: Path, split: str | None = None) -> list[tuple[Path, str, Path, str]]:
    """(capture, path relative to raw, output parquet, split) for every capture; errors before anything is written."""
    dataset_spec(dataset)
    files = find_captures(raw)
    base = raw if raw.is_dir() else raw.parent
    jobs: list[tuple[Path, str, Path, str]] = []
    outputs: dict[Path, Path] = {}
    for path in files:
        rel = path.relative_to(base)
        file_split = split or (rel.parts[0] if len(rel.parts) > 1 else None)
        if not file_split:
            raise KdgatError(
                f"{rel} is not inside a split folder (e.g. train_01_attack_free/); move it into one or pass --split."
            )
        if RECORDING_SEPARATOR in file_split:
            raise KdgatError(
                f"{rel}: a split name may not contain '{RECORDING_SEPARATOR}' "
                f"(it separates split and recording in the output file name)."
            )
        out = out_root / dataset / recording_file_name(file_split, path.stem)
        if out in outputs:
            raise KdgatError(f"{rel} and {outputs[out]} would both become {out.name}; rename one of them.")
        outputs[out] = rel
        jobs.append((path, rel.as_posix(), out, file_split))
    return jobs


def ingest(
    dataset: str,
    raw: str | Path,
    out_root: str | Path | None = None,
    split: str | None = None,
    fmt: str = "auto",
    label: int = 0,
    strict: bool = False,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
) -> list[IngestResult]:
    """Ingest every capture under `raw` into `<out_root or data root>/<dataset>/`; returns one result per file."""
    if fmt != "auto" and fmt not in RAW_FORMATS:
        raise KdgatError(f"Unknown capture format '{fmt}'; choose auto or one of: {', '.join(RAW_FORMATS)}.")
    if label not in (0, 1):
        raise KdgatError(f"--label must be 0 (normal) or 1 (attack), got {label}.")
    root = Path(out_root) if out_root else Path(resolve_data_root().value)
    jobs = plan(dataset, Path(raw), root, split)
    ensure_writable_dir(root / dataset, "output folder")  # after the plan: bad input writes nothing
    results = [ingest_file(path, rel, out, sp, fmt, label, strict, advance, force) for path, rel, out, sp in jobs]
    if not any(r.messages for r in results):
        raise KdgatError(f"No CAN messages found in the captures under {raw}.")
    return results


def total_bytes(raw: str | Path) -> int:
    """Bytes of all captures under raw (the progress bar's total)."""
    return sum(p.stat().st_size for p in find_captures(Path(raw)))
