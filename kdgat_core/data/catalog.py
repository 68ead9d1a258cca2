"""What each registered dataset has on disk: recordings, messages, attack share, distinct ids, time span (`kdgat datasets`),
and its quirks: recordings shared between training and test splits, empty recordings, timestamps going backwards,
labelled attacks inside a recording's calibration part (docs/data.md, "Dataset quirks").

Reads only the columns it needs with pyarrow; no torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kdgat_core.config import KdgatError, PipelineConfig, dataset_spec, datasets, resolve_data_root
from kdgat_core.data.canonical import list_recordings
from kdgat_core.data.windows import calibration_size


def dataset_summary(name: str, folder: Path, splits: tuple[str, ...], train_splits: tuple[str, ...] = ()) -> dict:
    """One row of `kdgat datasets` for a dataset folder (which may be missing). `shared_train_test`: test recordings
    whose messages equal a training recording's (training keeps it; the test scenario leaves it out)."""
    row: dict[str, Any] = {
        "dataset": name,
        "status": "missing",
        "recordings": 0,
        "duplicates": 0,
        "messages": 0,
        "attack_share": None,
        "distinct_ids": 0,
        "span_s": 0.0,
        "splits": "",
        "shared_train_test": 0,
        "empty_recordings": 0,
        "unsorted_recordings": 0,
        "calibration_attacks": 0,
        "path": str(folder),
    }
    if not folder.is_dir():
        return row
    recs = list_recordings(folder)
    if not recs:
        row["status"] = "empty"
        return row
    ids: set[int] = set()
    attacks = 0
    seen: set[str] = set()
    train_digests: set[str] = set()
    test_digests: list[str] = []
    for r in recs:
        try:
            t = pq.read_table(r.path, columns=["timestamp", "id", "label"], use_threads=False)
        except Exception as exc:
            raise KdgatError(f"Cannot read {r.path}: {exc}.") from None
        ts = t.column("timestamp").to_numpy()
        id_arr = t.column("id").to_numpy()
        label = t.column("label").to_numpy()
        h = hashlib.blake2b(digest_size=16)
        for a in (ts, id_arr, label):
            h.update(np.ascontiguousarray(a).tobytes())
        digest = h.hexdigest()
        if ts.size == 0:
            row["empty_recordings"] += 1
        elif r.split in train_splits:
            train_digests.add(digest)
        else:
            test_digests.append(digest)
        if ts.size > 1 and not (np.diff(ts) >= 0).all():
            row["unsorted_recordings"] += 1  # readers sort stably by timestamp
            label = label[np.argsort(ts, kind="stable")]
        if label[: calibration_size(ts.size)].any():
            row["calibration_attacks"] += 1
        row["recordings"] += 1
        if digest in seen:
            row["duplicates"] += 1
        seen.add(digest)
        row["messages"] += t.num_rows
        attacks += int(pc.sum(t.column("label")).as_py() or 0)
        ids.update(np.unique(id_arr).tolist())
        if ts.size:
            row["span_s"] += float(np.nanmax(ts) - np.nanmin(ts))
    row["shared_train_test"] = sum(d in train_digests for d in test_digests)
    row["status"] = "ok"
    row["attack_share"] = attacks / row["messages"] if row["messages"] else 0.0
    row["distinct_ids"] = len(ids)
    present = sorted({r.split for r in recs})
    unknown = [s for s in present if s not in splits]
    row["splits"] = f"{len(present) - len(unknown)}/{len(splits)}" + (f" (+{', '.join(unknown)})" if unknown else "")
    return row


def catalog(data_root: str | None = None, only: str | None = None) -> list[dict]:
    """Rows for every registered dataset (built in plus kdgat.toml's [datasets.<name>]), or just `only`."""
    root = Path(resolve_data_root(data_root).value)
    specs = datasets()
    if only is not None:
        if only not in specs:
            raise KdgatError(f"Unknown dataset '{only}'; known datasets: {', '.join(sorted(specs))}.")
        specs = {only: specs[only]}
    return [dataset_summary(name, root / name, spec.splits, spec.train_splits) for name, spec in specs.items()]


def dataset_dir(dataset: str, data_root: str | Path | None = None) -> Path:
    """`<data root>/<dataset>`; a clear error when it is not there."""
    dataset_spec(dataset)  # unknown names fail with the list of known ones
    resolved = resolve_data_root(str(data_root) if data_root else None)
    folder = Path(resolved.value) / dataset
    if not folder.is_dir():
        raise KdgatError(
            f"Dataset folder {folder} does not exist (data root from {resolved.source}); "
            f"ingest raw captures with `kdgat ingest {dataset} --raw DIR` or set --data-root."
        )
    return folder


def validate_data_config(cfg: PipelineConfig) -> None:
    """cfg.data's window settings make sense (checked before torch is imported, so mistakes fail fast)."""
    d = cfg.data
    if d.window < 2:
        raise KdgatError(f"data.window must be at least 2 messages, got {d.window}.")
    if d.stride < 1:
        raise KdgatError(f"data.stride must be at least 1 message, got {d.stride}.")
    if not 0.0 <= d.val_fraction < 1.0:
        raise KdgatError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}.")
    if d.max_messages < 0:
        raise KdgatError(f"data.max_messages must be 0 (all) or positive, got {d.max_messages}.")
