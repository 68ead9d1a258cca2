"""Synthetic subtle attacks injected into the validation tail of training recordings (docs/training.md, "Validation
with synthetic subtle attacks"): the families and parameter ranges below were fixed before any test figure was looked
at. They give validation an attack that is not a flood, so thresholds, term weights and the fusion policy are not all
fitted to blatant DoS and fuzzing. No torch here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from kdgat_core.data.canonical import Messages
from kdgat_core.data.windows import RecordingContext

# family codes (0 = none); a window's family is the highest code among its injected frames
FAMILIES = ("rate", "drift", "suppress", "masquerade")
BLOCK_WINDOWS = 10  # the tail is cut into blocks of 10 W messages, one burst per attack-free block
BURST_WINDOWS = (2, 5)  # burst length in W messages of the original traffic, uniform
MAX_VICTIM_PERIOD_S = 0.1  # victims send at least every 100 ms in the calibration part
RATE_FACTOR = (2.0, 20.0)  # rate: f, log-uniform
DRIFT_RANGE = (16, 128)  # drift: d, uniform (bytes added by the burst's end, mod 256)
MASQUERADE_JITTER = 0.02  # masquerade: jitter of the forged frames, relative to the period
REPLAY_FRAMES = 16  # rate / masquerade: payloads taken from the victim's last frames before the burst


@dataclass
class Injected:
    """A recording with bursts injected after message `cut`; arrays aligned with `messages` (time-sorted)."""

    messages: Messages
    family: np.ndarray  # uint8 [n] 1 + index in FAMILIES for injected-attack frames, else 0
    original_attack: np.ndarray  # bool [n] a labelled attack frame of the recording itself
    bursts: list[tuple[str, int, float, float]]  # (family, victim id, t0, t1)


def _victims(ctx: RecordingContext, lo: int, hi: int) -> np.ndarray:
    """Ranks of the ids that send at least every MAX_VICTIM_PERIOD_S in calibration and at least once in [lo, hi)."""
    frequent = np.flatnonzero(np.nan_to_num(ctx.period, nan=np.inf) <= MAX_VICTIM_PERIOD_S)
    present = np.unique(ctx.rank[lo:hi])
    return np.intersect1d(frequent, present)


def inject_tail(
    m: Messages, ctx: RecordingContext, cut: int, window: int, seed: int, name: str, first: int = 0
) -> Injected:
    """One burst per block of BLOCK_WINDOWS * window messages of [cut, n) that holds no labelled attack (a shorter
    tail is one block; a tail shorter than the shortest burst gets none). Families follow one shuffle of FAMILIES
    drawn from `seed` alone, starting at position `first` (the recording's index: short tails of several recordings
    still meet every family)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    n = len(m)
    block = min(BLOCK_WINDOWS * window, n - cut)  # a tail shorter than one block is one block
    if block < BURST_WINDOWS[0] * window:
        return Injected(m, np.zeros(n, np.uint8), m.label.astype(bool), [])
    ts, ids, payload, dlc = m.timestamp, m.id, m.payload.copy(), m.dlc.copy()
    label = m.label.copy()
    family = np.zeros(n, np.uint8)
    keep = np.ones(n, bool)
    add_ts, add_id, add_pay, add_dlc, add_fam = [], [], [], [], []
    bursts: list[tuple[str, int, float, float]] = []
    order = np.random.default_rng(seed).permutation(len(FAMILIES))
    k = first
    for b0 in range(cut, n - block + 1, block):
        if m.label[b0 : b0 + block].any():
            continue
        start = b0 + int(rng.integers(0, block // 2))
        length = int(rng.integers(BURST_WINDOWS[0] * window, BURST_WINDOWS[1] * window + 1))
        end = min(start + length, b0 + block)
        t0, t1 = float(ts[start]), float(ts[end - 1])
        victims = _victims(ctx, start, end)
        if victims.size == 0 or t1 <= t0:
            continue
        r = int(victims[int(rng.integers(victims.size))])
        can_id = int(ctx.ids[r])
        p = float(ctx.period[r])
        span = np.arange(start, end)
        own = span[ctx.rank[start:end] == r]
        before = np.flatnonzero(ctx.rank[:start] == r)[-REPLAY_FRAMES:]
        if before.size == 0 or own.size == 0:
            continue
        fam = FAMILIES[order[k % len(FAMILIES)]]
        k += 1
        code = np.uint8(FAMILIES.index(fam) + 1)
        if fam == "rate":
            f = float(np.exp(rng.uniform(np.log(RATE_FACTOR[0]), np.log(RATE_FACTOR[1]))))
            at = t0 + rng.uniform(0, p / f) + np.arange(0, t1 - t0, p / f)
            src = before[np.arange(at.size) % before.size]
            add_ts.append(at)
            add_id.append(np.full(at.size, can_id, np.uint32))
            add_pay.append(m.payload[src])
            add_dlc.append(m.dlc[src])
            add_fam.append(np.full(at.size, code))
        elif fam == "drift":
            byte = int(rng.integers(0, max(int(m.dlc[own[0]]), 1)))
            d = int(rng.integers(DRIFT_RANGE[0], DRIFT_RANGE[1] + 1))
            shift = np.rint(d * (ts[own] - t0) / (t1 - t0)).astype(np.int64)
            payload[own, byte] = ((payload[own, byte].astype(np.int64) + shift) % 256).astype(np.uint8)
            family[own] = code
        elif fam == "suppress":
            keep[own] = False
            family[span] = code
        else:  # masquerade: the victim's frames replaced at its own period, one earlier payload frozen
            keep[own] = False
            at = t0 + rng.uniform(0, p) + np.arange(0, t1 - t0, p)
            at = at + rng.normal(0.0, MASQUERADE_JITTER * p, at.size)
            src = np.full(at.size, before[int(rng.integers(before.size))])
            add_ts.append(np.maximum(at, t0))
            add_id.append(np.full(at.size, can_id, np.uint32))
            add_pay.append(m.payload[src])
            add_dlc.append(m.dlc[src])
            add_fam.append(np.full(at.size, code))
        bursts.append((fam, can_id, t0, t1))
    cat = lambda a, extra: np.concatenate([a[keep], *extra]) if extra else a[keep]  # noqa: E731
    new_ts = cat(ts, add_ts)
    new_family = cat(family, add_fam)
    original = cat(label.astype(bool), [np.zeros(len(a), bool) for a in add_ts])
    new = Messages(
        timestamp=new_ts,
        id=cat(ids, add_id),
        payload=cat(payload, add_pay),
        dlc=cat(dlc, add_dlc),
        label=(original | (new_family > 0)).astype(np.uint8),
    )
    order_t = np.argsort(new.timestamp, kind="stable")  # inserted frames go after originals of equal time
    sort = lambda a: np.ascontiguousarray(a[order_t])  # noqa: E731
    return Injected(
        Messages(sort(new.timestamp), sort(new.id), sort(new.payload), sort(new.dlc), sort(new.label)),
        sort(new_family),
        sort(original),
        bursts,
    )
