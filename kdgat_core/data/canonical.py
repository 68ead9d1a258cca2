"""The canonical message table (one parquet file per recording) and its fast decoding into numpy arrays.

A dataset root holds `<root>/<dataset>/<split>__<recording>.parquet`, each with the columns of CANONICAL_SCHEMA.
No torch here: `kdgat datasets` and ingest use this module without paying for torch's import.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kdgat_core.config import KdgatError

CANONICAL_SCHEMA = pa.schema(
    [
        ("timestamp", pa.float64()),  # seconds since the epoch
        ("id", pa.uint32()),  # CAN arbitration id
        ("data_field", pa.string()),  # payload, upper-case hex, 2 characters per byte, no spaces
        ("label", pa.uint8()),  # 0 normal, 1 injected / attack
        ("source_file", pa.string()),  # the raw capture it came from, relative to the raw folder
    ]
)
RECORDING_SEPARATOR = "__"  # <split>__<recording>.parquet
PAYLOAD_BYTES = 8

# hex character -> nibble value; 255 marks a character that is not hex
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


@dataclass(frozen=True)
class Recording:
    """One parquet file of a dataset: a capture from one vehicle, in one split folder."""

    split: str
    name: str
    path: Path

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass
class Messages:
    """One recording's messages as arrays, sorted by timestamp (stable, so equal timestamps keep file order)."""

    timestamp: np.ndarray  # float64 [n]
    id: np.ndarray  # uint32 [n]
    payload: np.ndarray  # uint8 [n, 8]; bytes beyond the DLC are 0
    dlc: np.ndarray  # uint8 [n]
    label: np.ndarray  # uint8 [n]

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def same_messages(self, other: Messages) -> bool:
        """True when both hold exactly the same messages (hcrl_sa ships its attack-free drives in two folders).
        Two empty recordings are not the same recording: an empty file is reported as empty, not as a duplicate."""
        if len(self) != len(other) or len(self) == 0:
            return False
        if self.timestamp[0] != other.timestamp[0] or self.timestamp[-1] != other.timestamp[-1]:
            return False
        return all(
            np.array_equal(a, b)
            for a, b in zip(
                (self.timestamp, self.id, self.payload, self.dlc, self.label),
                (other.timestamp, other.id, other.payload, other.dlc, other.label),
            )
        )

    def digest(self) -> str:
        """A hash of every message (timestamp, id, payload, label): equal recordings in different splits match."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        for a in (self.timestamp, self.id, self.payload, self.dlc, self.label):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def recording_file_name(split: str, recording: str) -> str:
    return f"{split}{RECORDING_SEPARATOR}{recording}.parquet"


def list_recordings(dataset_dir: Path) -> list[Recording]:
    """Every `<split>__<recording>.parquet` directly in a dataset folder, sorted by split then recording."""
    out = []
    for path in sorted(dataset_dir.glob("*.parquet")):
        stem = path.name[: -len(".parquet")]
        if RECORDING_SEPARATOR not in stem:
            continue
        split, name = stem.split(RECORDING_SEPARATOR, 1)
        out.append(Recording(split, name, path))
    return out


def decode_payload(data_field: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Hex payload strings -> (uint8 [n, 8] bytes, uint8 [n] DLC), vectorised over the whole column.

    Dictionary-encoded columns (how parquet stores them) are decoded once per distinct payload, then gathered.
    """
    chunks = data_field.chunks if isinstance(data_field, pa.ChunkedArray) else [data_field]
    parts = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            payload, dlc = _decode_plain(chunk.dictionary)
            idx = chunk.indices.fill_null(0).to_numpy(zero_copy_only=False)
            parts.append((payload[idx], dlc[idx]))
        else:
            parts.append(_decode_plain(chunk))
    if not parts:
        return np.zeros((0, PAYLOAD_BYTES), np.uint8), np.zeros(0, np.uint8)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p for p, _ in parts]), np.concatenate([d for _, d in parts])


def _decode_plain(data_field: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    n = len(data_field)
    if n == 0:
        return np.zeros((0, PAYLOAD_BYTES), np.uint8), np.zeros(0, np.uint8)
    data_field = data_field.fill_null("")
    lengths = pc.utf8_length(data_field).to_numpy(zero_copy_only=False)
    width = 2 * PAYLOAD_BYTES
    fixed = pc.utf8_slice_codeunits(pc.utf8_rpad(data_field, width=width, padding="0"), 0, width)
    offsets = np.frombuffer(fixed.buffers()[1], dtype=np.int32, count=n + 1, offset=fixed.offset * 4)
    chars = np.frombuffer(fixed.buffers()[2], dtype=np.uint8, count=n * width, offset=int(offsets[0]))
    nibbles = _NIBBLE[chars.reshape(n, width)]
    if (nibbles == 255).any():
        bad = int(np.flatnonzero((nibbles == 255).any(axis=1))[0])
        raise KdgatError(f"Payload '{data_field[bad].as_py()}' is not hexadecimal.")
    payload = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    dlc = np.minimum(lengths, width) // 2
    return payload, dlc.astype(np.uint8)


def read_messages(path: Path, max_messages: int = 0) -> Messages:
    """Read one canonical parquet file, sorted by timestamp; max_messages > 0 keeps the earliest that many."""
    try:
        # one thread: on a small shared machine arrow's thread pool costs more than it gains on files this size
        table = pq.read_table(
            path, columns=["timestamp", "id", "data_field", "label"], use_threads=False, read_dictionary=["data_field"]
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise KdgatError(f"Cannot read {path}: {exc}.") from None
    ts = table.column("timestamp").to_numpy().astype(np.float64, copy=False)
    if np.isnan(ts).any():
        raise KdgatError(f"{path} has NaN timestamps; re-ingest it with `kdgat ingest`.")
    order = None
    if ts.size > 1 and not (np.diff(ts) >= 0).all():
        order = np.argsort(ts, kind="stable")
    if order is not None:
        order = order[:max_messages] if max_messages else order
        table = table.take(pa.array(order))
        ts = ts[order]
    elif max_messages and max_messages < ts.size:
        table = table.slice(0, max_messages)
        ts = ts[:max_messages]
    payload, dlc = decode_payload(table.column("data_field"))
    ids = table.column("id").to_numpy().astype(np.uint32, copy=False)
    label = table.column("label").to_numpy().astype(np.uint8, copy=False)
    return Messages(np.ascontiguousarray(ts), np.ascontiguousarray(ids), payload, dlc, np.ascontiguousarray(label))


def write_parquet_atomic(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write to a temp file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def canonical_table(
    timestamp: np.ndarray | Sequence[float],
    ids: np.ndarray | Sequence[int],
    data_field: Sequence[str],
    label: np.ndarray | Sequence[int],
    source_file: str | Sequence[str],
) -> pa.Table:
    """Build a table with exactly the canonical schema (source_file: one string, or one per row)."""
    n = len(timestamp)
    if isinstance(source_file, str):
        source = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([source_file])).cast(
            pa.string()
        )
    else:
        source = pa.array(source_file, pa.string())
    return pa.table(
        {
            "timestamp": pa.array(np.asarray(timestamp, np.float64), pa.float64()),
            "id": pa.array(np.asarray(ids, np.uint32), pa.uint32()),
            "data_field": pa.array(data_field, pa.string()),
            "label": pa.array(np.asarray(label, np.uint8), pa.uint8()),
            "source_file": source,
        },
        schema=CANONICAL_SCHEMA,
    )


def payload_to_hex(payload: np.ndarray, dlc: np.ndarray) -> list[str]:
    """uint8 [n, 8] bytes + DLC -> upper-case hex strings (the canonical data_field)."""
    return [bytes(row[:d]).hex().upper() for row, d in zip(payload, dlc)]
