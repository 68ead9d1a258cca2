"""Deterministic synthetic CAN traffic: periodic ids with their own periods, jitter and payload behaviour, plus attacks
injected the way the public datasets did (DoS, fuzzing, spoofing, malfunction-style payload anomalies).

Same seed, same bytes. Writes canonical parquet (`write_dataset`) and the three raw formats kdgat ingests
(`write_raw`, `write_raw_dataset`), so the ingest round trip can be tested against the generator's own table.
No torch here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from kdgat_core.config import TEST_SPLITS_BASE, TRAIN_ATTACK_FREE, TRAIN_WITH_ATTACKS, KdgatError
from kdgat_core.data.canonical import canonical_table, payload_to_hex, recording_file_name, write_parquet_atomic
from kdgat_core.safe_io import check_finite_positive, check_name, ensure_writable_dir

T0 = 1_700_000_000.0  # first timestamp of every recording (seconds since the epoch)
BASE_DURATION_S = 2.5  # seconds of traffic per recording at scale 1 (about 2,500 normal messages)
DOS_ID = 0x000
DOS_PERIOD_S = 0.0003
FUZZ_PERIOD_S = 0.0005
SPOOF_PERIOD_S = 0.001
ATTACKS = ("DoS", "fuzzing", "spoofing", "malfunction", "replay")
REPLAY_FACTOR = 2  # replay: a legitimate id's own frames sent again, this many times its normal rate
# (start, end) of the attack bursts as fractions of the recording; the last one lies in the validation tail too
BURSTS = ((0.20, 0.27), (0.50, 0.57), (0.85, 0.92))

# byte behaviours
CONST, COUNTER, SIGNAL, CHECKSUM = 0, 1, 2, 3


@dataclass(frozen=True)
class Vehicle:
    """One car's normal traffic: which ids it sends, how often, and what their payload bytes do."""

    name: str
    ids: np.ndarray  # uint32 [k]
    periods: np.ndarray  # float64 [k] seconds
    dlc: np.ndarray  # uint8 [k]
    modes: np.ndarray  # uint8 [k, 8] byte behaviour
    consts: np.ndarray  # uint8 [k, 8] constant value / counter offset / signal centre
    signal_periods: np.ndarray  # float64 [k, 8] seconds per cycle of slowly varying signals


def make_vehicle(
    name: str, seed: int, id_low: int, id_high: int, n_ids: int = 30, period_scale: float = 1.0
) -> Vehicle:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    ids = np.sort(rng.choice(np.arange(id_low, id_high), size=n_ids, replace=False)).astype(np.uint32)
    periods = rng.choice([0.01, 0.01, 0.02, 0.02, 0.05, 0.1, 0.1, 0.2, 0.5, 1.0], size=n_ids) * period_scale
    dlc = rng.choice([8, 8, 8, 8, 8, 6, 5, 4, 2], size=n_ids).astype(np.uint8)
    modes = rng.choice([CONST, CONST, COUNTER, SIGNAL, SIGNAL], size=(n_ids, 8)).astype(np.uint8)
    has_checksum = rng.random(n_ids) < 0.3
    modes[has_checksum, 7] = CHECKSUM
    consts = rng.integers(0, 256, size=(n_ids, 8)).astype(np.uint8)
    signal_periods = rng.uniform(1.0, 8.0, size=(n_ids, 8))
    return Vehicle(name, ids, periods, dlc, modes, consts, signal_periods)


def vehicles(seed: int = 0) -> dict[str, Vehicle]:
    """Two known vehicles sharing part of their id space, and an unknown one with other ids and slower periods."""
    return {
        "a": make_vehicle("a", seed, 0x050, 0x500),
        "b": make_vehicle("b", seed, 0x050, 0x500),
        "c": make_vehicle("c", seed, 0x300, 0x7FF, n_ids=26, period_scale=1.6),
    }


def _normal_traffic(
    v: Vehicle, duration: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ts_parts, idx_parts, k_parts = [], [], []
    for i, period in enumerate(v.periods):
        n = int(duration / period) + 1
        k = np.arange(n)
        t = rng.uniform(0, period) + k * period + rng.normal(0.0, 0.02 * period, size=n)
        keep = (t >= 0) & (t < duration)
        ts_parts.append(t[keep])
        idx_parts.append(np.full(keep.sum(), i))
        k_parts.append(k[keep])
    ts = np.concatenate(ts_parts)
    idx = np.concatenate(idx_parts)
    seq = np.concatenate(k_parts)
    payload = np.zeros((ts.size, 8), np.uint8)
    for b in range(8):
        mode = v.modes[idx, b]
        c = v.consts[idx, b].astype(np.int64)
        counter = (c + seq) % 256
        wave = 128 + 100 * np.sin(2 * np.pi * ts / v.signal_periods[idx, b] + c) + rng.normal(0, 2, ts.size)
        val = np.where(mode == COUNTER, counter, np.where(mode == SIGNAL, np.clip(np.rint(wave), 0, 255), c))
        payload[:, b] = val.astype(np.uint8)
    checksum = np.bitwise_xor.reduce(payload[:, :7], axis=1)
    payload[:, 7] = np.where(v.modes[idx, 7] == CHECKSUM, checksum, payload[:, 7])
    dlc = v.dlc[idx]
    payload[np.arange(8)[None, :] >= dlc[:, None]] = 0
    return ts, v.ids[idx], payload, dlc


def _in_bursts(ts: np.ndarray, duration: float) -> np.ndarray:
    mask = np.zeros(ts.size, bool)
    for lo, hi in BURSTS:
        mask |= (ts >= lo * duration) & (ts < hi * duration)
    return mask


def _burst_times(duration: float, period: float, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for lo, hi in BURSTS:
        t = np.arange(lo * duration, hi * duration, period)
        parts.append(t + rng.normal(0.0, 0.05 * period, t.size))
    return np.concatenate(parts)


def generate_recording(
    vehicle: Vehicle, attack: str | None, duration: float, seed: int, source_file: str, name: str = ""
) -> pa.Table:
    """One recording in canonical form (timestamps rounded to microseconds, so every raw format round-trips)."""
    if attack is not None and attack not in ATTACKS:
        raise KdgatError(f"Unknown synthetic attack '{attack}'; choose one of: {', '.join(ATTACKS)}.")
    rng = np.random.default_rng([seed, zlib.crc32(f"{vehicle.name}/{attack}/{name}".encode())])
    ts, ids, payload, dlc = _normal_traffic(vehicle, duration, rng)
    label = np.zeros(ts.size, np.uint8)
    if attack == "malfunction":
        # one id's payload goes wrong at its normal timing: a stuck byte and a signal out of its range
        frequent = vehicle.ids[vehicle.periods <= np.median(vehicle.periods)]
        victim = frequent[int(rng.integers(len(frequent)))]
        hit = (ids == victim) & _in_bursts(ts, duration)
        payload[hit, 0] = 0xFF
        payload[hit, 1] = rng.integers(0, 256, hit.sum()).astype(np.uint8)
        dlc[hit] = 8
        label[hit] = 1
    elif attack == "replay":
        # timing only: one frequent id's own latest genuine frame sent again between its frames (hcrl_sa-like
        # "malfunction" floods are this at 10x); payloads, ids and the other ids' timing stay normal
        frequent = vehicle.ids[vehicle.periods <= np.median(vehicle.periods)]
        victim = frequent[int(rng.integers(len(frequent)))]
        period = float(vehicle.periods[vehicle.ids == victim][0]) / REPLAY_FACTOR
        at = _burst_times(duration, period, rng)
        own = np.flatnonzero(ids == victim)
        src = own[np.clip(np.searchsorted(ts[own], at) - 1, 0, len(own) - 1)]
        ts = np.concatenate([ts, at])
        ids = np.concatenate([ids, ids[src]])
        payload = np.concatenate([payload, payload[src]])
        dlc = np.concatenate([dlc, dlc[src]])
        label = np.concatenate([label, np.ones(at.size, np.uint8)])
    elif attack is not None:
        period = {"DoS": DOS_PERIOD_S, "fuzzing": FUZZ_PERIOD_S, "spoofing": SPOOF_PERIOD_S}[attack]
        at = _burst_times(duration, period, rng)
        n = at.size
        if attack == "DoS":
            a_ids = np.full(n, DOS_ID, np.uint32)
            a_pay = np.zeros((n, 8), np.uint8)
        elif attack == "fuzzing":
            a_ids = rng.integers(0, 0x800, n).astype(np.uint32)
            a_pay = rng.integers(0, 256, (n, 8)).astype(np.uint8)
        else:  # spoofing: one legitimate id, a forged constant payload (e.g. a gear or RPM value)
            a_ids = np.full(n, vehicle.ids[int(rng.integers(len(vehicle.ids)))], np.uint32)
            a_pay = np.tile(rng.integers(0, 256, 8).astype(np.uint8), (n, 1))
        ts = np.concatenate([ts, at])
        ids = np.concatenate([ids, a_ids])
        payload = np.concatenate([payload, a_pay])
        dlc = np.concatenate([dlc, np.full(n, 8, np.uint8)])
        label = np.concatenate([label, np.ones(n, np.uint8)])
    ts = np.round((T0 + np.maximum(ts, 0.0)) * 1e6) / 1e6
    order = np.argsort(ts, kind="stable")
    ts, ids, payload, dlc, label = ts[order], ids[order], payload[order], dlc[order], label[order]
    return canonical_table(ts, ids, payload_to_hex(payload, dlc), label, source_file)


# split -> [(recording name, vehicle, attack)]; train_02 repeats train_01's recordings byte for byte, as hcrl_sa does
def dataset_layout() -> dict[str, list[tuple[str, str, str | None]]]:
    test01, test02, test03, test04 = TEST_SPLITS_BASE
    return {
        TRAIN_ATTACK_FREE: [("attack-free-a", "a", None), ("attack-free-b", "b", None)],
        TRAIN_WITH_ATTACKS: [
            ("DoS-a", "a", "DoS"),
            ("fuzzing-b", "b", "fuzzing"),
            ("attack-free-a", "a", None),
            ("attack-free-b", "b", None),
        ],
        test01: [("DoS-b", "b", "DoS"), ("fuzzing-a", "a", "fuzzing")],
        test02: [("DoS-c", "c", "DoS"), ("fuzzing-c", "c", "fuzzing")],
        test03: [("malfunction-a", "a", "malfunction"), ("spoofing-b", "b", "spoofing")],
        test04: [("malfunction-c", "c", "malfunction"), ("spoofing-c", "c", "spoofing")],
    }


def dataset_tables(seed: int = 0, scale: float = 1.0, ext: str = "csv") -> dict[tuple[str, str], pa.Table]:
    """(split, recording) -> canonical table of the whole synthetic dataset; source_file is `<split>/<rec>.<ext>`."""
    if scale <= 0:
        raise KdgatError(f"Synthetic scale must be positive, got {scale}.")
    cars = vehicles(seed)
    duration = BASE_DURATION_S * scale
    out = {}
    for split, recs in dataset_layout().items():
        for rec, car, attack in recs:
            # the recording's own seed ignores the split, so a recording listed in two splits is identical
            out[(split, rec)] = generate_recording(cars[car], attack, duration, seed, f"{split}/{rec}.{ext}", name=rec)
    return out


def write_dataset(root: str | Path, name: str = "synthetic", seed: int = 0, scale: float = 1.0) -> Path:
    """Write `<root>/<name>/<split>__<recording>.parquet` (the canonical layout); returns the dataset folder."""
    check_name(name, "dataset name")
    check_finite_positive(scale, "--scale")
    folder = ensure_writable_dir(Path(root) / name, "output folder")
    for (split, rec), table in dataset_tables(seed, scale).items():
        write_parquet_atomic(table, folder / recording_file_name(split, rec))
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# Raw formats (what users' captures look like); ingest reads them back
# ----------------------------------------------------------------------------------------------------------------------
RAW_FORMATS = ("csv", "hcrl", "candump")
RAW_EXTENSIONS = {"csv": "csv", "hcrl": "csv", "candump": "log"}
LABEL_SIDECAR_SUFFIX = ".labels"  # candump: one 0/1 per frame line, next to the log


def write_raw(table: pa.Table, path: str | Path, fmt: str) -> None:
    """Write one canonical table as a raw capture: can-train-and-test CSV, HCRL Car-Hacking CSV or candump log."""
    if fmt not in RAW_FORMATS:
        raise KdgatError(f"Unknown raw format '{fmt}'; choose one of: {', '.join(RAW_FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = table.column("timestamp").to_pylist()
    ids = table.column("id").to_pylist()
    data = table.column("data_field").to_pylist()
    labels = table.column("label").to_pylist()
    lines = []
    if fmt == "csv":
        lines.append("timestamp,arbitration_id,data_field,attack")
        lines += [f"{t:.6f},{i:03X},{d},{y}" for t, i, d, y in zip(ts, ids, data, labels)]
    elif fmt == "hcrl":
        for t, i, d, y in zip(ts, ids, data, labels):
            payload = [d[k : k + 2].lower() for k in range(0, len(d), 2)]
            lines.append(",".join([f"{t:.6f}", f"{i:04x}", str(len(payload)), *payload, "T" if y else "R"]))
    else:
        lines += [
            f"({t:.6f}) can0 {i:03X}#{d}" if i <= 0x7FF else f"({t:.6f}) can0 {i:08X}#{d}"
            for t, i, d in zip(ts, ids, data)
        ]
        path.with_name(path.name + LABEL_SIDECAR_SUFFIX).write_text("".join(f"{y}\n" for y in labels))
    path.write_text("\n".join(lines) + "\n")


def write_raw_dataset(root: str | Path, fmt: str, seed: int = 0, scale: float = 1.0) -> Path:
    """Write the synthetic dataset as raw captures `<root>/<split>/<recording>.<ext>`, ready for `kdgat ingest`."""
    if fmt not in RAW_FORMATS:
        raise KdgatError(f"Unknown raw format '{fmt}'; choose one of: {', '.join(RAW_FORMATS)}.")
    check_finite_positive(scale, "--scale")
    root = ensure_writable_dir(Path(root), "output folder")
    ext = RAW_EXTENSIONS[fmt]
    for (split, rec), table in dataset_tables(seed, scale, ext).items():
        write_raw(table, root / split / f"{rec}.{ext}", fmt)
    return root
