"""load_graphs: a dataset's window graphs, built from its canonical parquet files or read from the on-disk cache.

Cache files live in `<cache dir>/<dataset>/` and are keyed by (part, window, stride, max_messages, val_fraction,
FEATURE_VERSION, the source files' name/size/mtime, and for test parts the training vocabulary). Writes go to a temp
file renamed into place, so concurrent SLURM jobs never read half a cache; a changed key simply means a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from kdgat_core.config import KdgatError, PipelineConfig, dataset_spec, resolve_cache_dir
from kdgat_core.data.canonical import Messages, Recording, list_recordings, read_messages
from kdgat_core.data.catalog import dataset_dir, validate_data_config
from kdgat_core.data.graphset import DatasetGraphs, GraphSet
from kdgat_core.data.injection import inject_tail
from kdgat_core.data.windows import (
    CALIBRATION_RULES,
    FEATURE_VERSION,
    WindowGraphs,
    build_window_graphs,
    calibration_range,
    calibration_size,
    empty_graphs,
    recording_context,
)
from kdgat_core.safe_io import ensure_writable_dir

BUILD_THREADS = 4
TRAIN_PART = "train"  # the cache file holding the train and val graph sets and the vocabulary
INJECTION_VERSION = 1  # enters the train part's cache key: bump when kdgat_core.data.injection changes
Progress = Callable[[str], None]


def _fingerprint(recs: list[Recording]) -> list[list]:
    out = []
    for r in recs:
        st = r.path.stat()
        out.append([r.path.name, st.st_size, st.st_mtime_ns])
    return out


def _cache_name(prefix: str, key: dict) -> str:
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    return f"{prefix}{digest}.pt"


def _prefix(part: str, cfg: PipelineConfig) -> str:
    d = cfg.data
    val = f"_v{d.val_fraction:g}" if part == TRAIN_PART else ""  # only the train part depends on the split point
    return f"{part}_w{d.window}_s{d.stride}_m{d.max_messages}{val}_f{FEATURE_VERSION}_"


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(path.name[: path.name.rindex("_") + 1] + "*.pt"):
        if stale != path:  # same part and settings, older sources or vocabulary: never valid again
            stale.unlink(missing_ok=True)


def _load(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=True)  # not mmap: random batch access would fault page by page
    except FileNotFoundError:
        return None
    except Exception:  # an unreadable cache is rebuilt, never trusted
        return None


def load_graphs(
    cfg: PipelineConfig,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> DatasetGraphs:
    """The train / val / test graph sets of cfg.dataset with cfg.data's window settings (see docs/INTERFACES.md)."""
    validate_data_config(cfg)
    say = progress or (lambda _msg: None)
    spec = dataset_spec(cfg.dataset)
    folder = dataset_dir(cfg.dataset, data_root)
    recs = list_recordings(folder)
    train_recs = [r for r in recs if r.split in spec.train_splits]
    if not train_recs:
        raise KdgatError(
            f"Dataset {cfg.dataset} in {folder} has no training recordings "
            f"(expected files named <split>__<recording>.parquet for splits {', '.join(spec.train_splits)})."
        )
    test_splits = [s for s in spec.test_splits if any(r.split == s for r in recs)]
    cache = Path(cache_dir) if cache_dir else resolve_cache_dir()
    cache = ensure_writable_dir(cache / cfg.dataset, "graph cache folder")
    W, S = cfg.data.window, cfg.data.stride
    seconds: dict[str, float] = {}
    shared: dict[str, str] = {}
    empty: list[str] = []
    attack_share: dict[str, float] = {}

    train_key = {
        "dataset": cfg.dataset,
        "part": TRAIN_PART,
        "window": W,
        "stride": S,
        "feature_version": FEATURE_VERSION,
        "max_messages": cfg.data.max_messages,
        "val_fraction": cfg.data.val_fraction,
        "sources": _fingerprint(train_recs),
        "injection": [INJECTION_VERSION, cfg.data.injection_seed] if cfg.data.val_injection else None,
    }
    train_path = cache / _cache_name(_prefix(TRAIN_PART, cfg), train_key)
    state = None if rebuild else _load(train_path)
    if state is None:
        say(f"building {TRAIN_PART} graphs ({len(train_recs)} recordings)")
        t0 = time.perf_counter()
        state = _build_train(cfg, train_recs)
        seconds[TRAIN_PART] = time.perf_counter() - t0
        _save_atomic(state, train_path)
    else:
        seconds[TRAIN_PART] = 0.0
    if len(state["train"]["y"]) == 0:
        raise KdgatError(
            f"No training recording of {cfg.dataset} has a whole window of {W} messages before its "
            f"validation tail; lower --window / data.window or raise data.max_messages."
        )
    vocab = state["vocab"].numpy()
    vocab_hash = hashlib.blake2b(vocab.tobytes(), digest_size=8).hexdigest()

    test: dict[str, GraphSet] = {}
    for split in test_splits:
        split_recs = [r for r in recs if r.split == split]
        key = {
            **train_key,
            "part": split,
            "sources": _fingerprint(split_recs),
            "vocab": vocab_hash,
            "train_sources": train_key["sources"],  # a test recording equal to a training one is left out
        }
        for k in ("val_fraction", "injection"):
            key.pop(k)
        path = cache / _cache_name(_prefix(split, cfg), key)
        tstate = None if rebuild else _load(path)
        if tstate is None:
            say(f"building {split} graphs ({len(split_recs)} recordings)")
            t0 = time.perf_counter()
            tstate = _build_split(cfg, split_recs, vocab, state["digests"])
            seconds[split] = time.perf_counter() - t0
            _save_atomic(tstate, path)
        else:
            seconds[split] = 0.0
        test[split] = GraphSet.from_state(tstate["graphs"])
        shared.update(tstate["shared"])
        empty += tstate["empty"]
        attack_share.update(tstate["calibration_attack_share"])

    injected = state.get("val_injected")
    graphs = DatasetGraphs(
        dataset=cfg.dataset,
        train=GraphSet.from_state(state["train"]),
        val=GraphSet.from_state(state["val"]),
        test=test,
        vocab=vocab,
        window=W,
        stride=S,
        build_seconds=seconds,
        duplicates=dict(zip(state["duplicates"][0::2], state["duplicates"][1::2])),
        missing_splits=[s for s in spec.test_splits if s not in test_splits],
        shared=shared,
        empty=list(state["empty"]) + empty,
        calibration_rule=dict(state["calibration_rule"]),
        calibration_attack_share=attack_share,
        val_injected=GraphSet.from_state(injected) if injected is not None else None,
        val_injected_family=state["val_injected_family"].numpy() if injected is not None else np.zeros(0, np.int64),
    )
    for note in graphs.notes():
        say(note)
    return graphs


def _pool() -> ThreadPoolExecutor:
    # numpy and pyarrow release the GIL in their loops, so recordings build in parallel on threads
    return ThreadPoolExecutor(max_workers=max(1, min(BUILD_THREADS, os.cpu_count() or 1)))


def _read_unique(cfg: PipelineConfig, recs: list[Recording]) -> tuple[list[tuple[Recording, Messages]], list[str]]:
    """Read recordings, dropping any whose messages equal an earlier one's (hcrl_sa ships its normal drives twice)."""
    with _pool() as pool:
        messages = list(pool.map(lambda r: read_messages(r.path, cfg.data.max_messages), recs))
    kept: list[tuple[Recording, Messages]] = []
    dups: list[str] = []
    for r, m in zip(recs, messages):
        twin = next((k for k, km in kept if km.same_messages(m)), None)
        if twin is not None:
            dups += [r.key, twin.key]
            continue
        kept.append((r, m))
    return kept, dups


def _build_train(cfg: PipelineConfig, recs: list[Recording]) -> dict:
    W, S = cfg.data.window, cfg.data.stride
    kept, dups = _read_unique(cfg, recs)
    vocab = np.unique(np.concatenate([m.id for _, m in kept])) if kept else np.zeros(0, np.uint32)
    names = [r.key for r, _ in kept]
    inject = cfg.data.val_injection

    def one(i: int) -> tuple[WindowGraphs, WindowGraphs, WindowGraphs, np.ndarray, np.ndarray, list, str]:
        r, m = kept[i]
        n = len(m)
        cut = n - int(round(n * cfg.data.val_fraction))  # the validation part is the recording's last messages
        # training labels may steer the calibration part away from a labelled attack (never test labels)
        calib, rule = calibration_range(n, m.label, W)
        ctx = recording_context(m, calib)
        inj_g, fam, orig = empty_graphs(), np.zeros(0, np.int64), np.zeros(0, bool)
        if inject and cut < n:
            inj = inject_tail(m, ctx, cut, W, cfg.data.injection_seed, r.key, first=i)
            if inj.bursts:
                im = inj.messages
                inj_g = build_window_graphs(im, W, S, vocab, i, lo=cut, hi=len(im), ctx=recording_context(im, calib))
                cols = inj_g.start[:, None] + np.arange(W)[None, :]
                fam = inj.family[cols].max(axis=1).astype(np.int64) if len(cols) else fam
                orig = np.asarray(inj.original_attack[cols].any(axis=1)) if len(cols) else orig
        return (
            build_window_graphs(m, W, S, vocab, recording=i, lo=0, hi=cut, ctx=ctx),
            build_window_graphs(m, W, S, vocab, recording=i, lo=cut, hi=n, ctx=ctx),
            inj_g,
            fam,
            orig,
            list(calib),
            rule,
        )

    with _pool() as pool:
        parts = list(pool.map(one, range(len(kept))))
    calibration = {names[i]: p[5] for i, p in enumerate(parts)}
    state = {
        "train": GraphSet.from_windows(WindowGraphs.concat([p[0] for p in parts]), names, calibration).state(),
        "val": GraphSet.from_windows(WindowGraphs.concat([p[1] for p in parts]), names, calibration).state(),
        "vocab": torch.from_numpy(vocab.astype(np.int64)),
        "duplicates": dups,
        "digests": {names[i]: m.digest() for i, (_, m) in enumerate(kept) if len(m)},
        "empty": [r.key for r, m in kept if len(m) == 0],
        "calibration_rule": {names[i]: p[6] for i, p in enumerate(parts) if p[6] != CALIBRATION_RULES[0]},
        "feature_version": FEATURE_VERSION,
    }
    if inject:
        fam = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
        orig = np.concatenate([p[4] for p in parts]) if parts else np.zeros(0, bool)
        keep = np.flatnonzero((fam > 0) & ~orig)  # an injected attack, and no attack of the recording itself
        all_inj = GraphSet.from_windows(WindowGraphs.concat([p[2] for p in parts]), names, calibration)
        state["val_injected"] = all_inj.subset(keep).state()
        state["val_injected_family"] = torch.from_numpy(fam[keep])
    return state


def _build_split(cfg: PipelineConfig, recs: list[Recording], vocab: np.ndarray, train_digests: dict) -> dict:
    W, S = cfg.data.window, cfg.data.stride
    kept, dups = _read_unique(cfg, recs)
    by_digest = {d: name for name, d in train_digests.items()}
    shared = {}
    for r, m in kept:
        twin = by_digest.get(m.digest()) if len(m) else None
        if twin is not None:  # the same recording on both sides would report training data as a test result
            shared[r.key] = twin
    kept = [(r, m) for r, m in kept if r.key not in shared]
    with _pool() as pool:
        parts = list(pool.map(lambda i: build_window_graphs(kept[i][1], W, S, vocab, recording=i), range(len(kept))))
    graphs = WindowGraphs.concat(parts) if parts else empty_graphs()
    calibration = {r.key: [0, calibration_size(len(m))] for r, m in kept}
    # reported, never used: test labels steer no feature and no calibration
    share = {r.key: float(m.label[: calibration_size(len(m))].mean()) for r, m in kept if len(m)}
    return {
        "graphs": GraphSet.from_windows(graphs, [r.key for r, _ in kept], calibration).state(),
        "duplicates": dups,
        "shared": shared,
        "empty": [r.key for r, m in kept if len(m) == 0],
        "calibration_attack_share": {k: v for k, v in share.items() if v > 0},
        "feature_version": FEATURE_VERSION,
    }
