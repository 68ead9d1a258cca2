"""Build a realistic MLflow 3.x SQLite tracking DB with many runs, for the query benchmarks.

MLflow creates the schema and logs one real run (the template every bulk row is checked against); the other runs are
bulk-inserted with sqlite3 into the same tables, with the same columns MLflow fills. The DB is left as MLflow leaves it
(no ANALYZE, rollback journal). At the end `mlflow.search_runs` reads the leaderboard back and must agree with SQL.

    .venv/bin/python benchmarks/make_big_db.py --runs 100000 --out /work/bench_data/big.db   # ~6 GB
    .venv/bin/python benchmarks/make_big_db.py --runs 1000 --out /tmp/bench/small.db
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kdgat_core.config import (
    ARTIFACT_ROOT_DIR,
    BUILTIN_DATASETS,
    EXPERIMENT_NAME,
    MLFLOW_RUN_NAME_TAG,
    STAGE_ARCH,
    STANDARD_METRICS,
    Metric,
    MlflowStatus,
    ModelSize,
    PipelineConfig,
    RunStatus,
    Stage,
    Tag,
    bool_tag,
    preset,
    run_name,
)

DATASETS = [d for d in BUILTIN_DATASETS if d != "synthetic"]  # hcrl_sa, hcrl_ch, set_01..04
DATASET_WEIGHTS = np.array([0.25, 0.20, 0.14, 0.14, 0.14, 0.13])
DATASET_QUALITY = np.array([0.975, 0.990, 0.930, 0.900, 0.880, 0.910])  # typical f1 of a good teacher
STAGES = [s.value for s in Stage]
STAGE_WEIGHTS = np.array([0.28, 0.28, 0.22, 0.22])
SIZES = [s.value for s in ModelSize]
HISTORY_METRICS = (Metric.TRAIN_LOSS.value, Metric.VAL_LOSS.value)  # 100-epoch curves, step = epoch
FINAL_METRICS = [m.value for m in STANDARD_METRICS if m.value not in HISTORY_METRICS]  # val_loss's final = last epoch
T0_MS = 1_735_689_600_000  # 2025-01-01, first run
SPAN_MS = 300 * 86_400_000  # runs spread over 300 days
BYTES_PER_RUN = 62_000  # measured: ~6 GB at 100k runs
CHUNK_RUNS = 2_500  # runs per insert transaction (~0.5M metric rows)
# Swept settings: the params researchers vary (values as MLflow stores them: str(value))
SWEEPS: dict[str, list] = {
    "train.lr": [1e-4, 3e-4, 1e-3, 3e-3],
    "train.batch_size": [32, 64, 128],
    "train.seed": [0, 1, 2, 3, 4, 42],
    "train.weight_decay": [0.0, 1e-5, 1e-4],
    "gat.dropout": [0.1, 0.2, 0.3],
    "vgae.dropout": [0.1, 0.2],
    "gat.jk": ["cat", "max", "lstm"],
    "data.window": [50, 100, 200],
    "kd.temperature": [2.0, 4.0, 8.0],
    "kd.alpha": [0.5, 0.7, 0.9],
}


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# 1. MLflow creates the schema, the experiment and one real run (the template for every column)
# ----------------------------------------------------------------------------------------------------------------------
def create_with_mlflow(out: Path, epochs: int) -> str:
    """Schema + experiment + one run written through MlflowClient the way kdgat_core.tracking.open_run writes."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param, RunTag

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    cwd = os.getcwd()
    os.chdir(out.parent)  # MLflow puts the default artifact root (./mlruns) next to the DB, as users run it
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{out}")
        exp_id = client.create_experiment(EXPERIMENT_NAME)
        cfg = preset("vgae,teacher", dataset="synthetic")
        cfg.train.epochs = epochs
        start = int(time.time() * 1000)
        run = client.create_run(
            exp_id, start_time=start, tags={MLFLOW_RUN_NAME_TAG: cfg.run_name}, run_name=cfg.run_name
        )
        rid = run.info.run_id
        tags = {
            Tag.DATASET.value: cfg.dataset,
            Tag.STAGE.value: cfg.stage,
            Tag.MODEL_SIZE.value: cfg.model_size,
            Tag.USE_KD.value: bool_tag(False),
            Tag.MODEL_ARCH.value: cfg.arch.value,
            Tag.RUN_ID.value: rid,
            Tag.STATUS.value: RunStatus.RUNNING.value,
            Tag.START_TIME.value: str(iso(np.array([start]))[0]),
            Tag.SLURM_JOB_ID.value: "39999999",
            Tag.GIT_COMMIT.value: "0" * 40,
            Tag.SEED.value: str(cfg.train.seed),
            Tag.ARTIFACT_DIR.value: str(out.parent / ARTIFACT_ROOT_DIR / cfg.run_name / rid),
        }
        client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_batch(rid, params=[Param(k, param_text(v)) for k, v in cfg.flatten().items()])
        for e in range(epochs):
            ts = int(time.time() * 1000)
            client.log_batch(
                rid,
                metrics=[
                    MlflowMetric(HISTORY_METRICS[0], 1.0 / (e + 1), ts, e),
                    MlflowMetric(HISTORY_METRICS[1], 1.2 / (e + 1), ts, e),
                ],
            )
        ts = int(time.time() * 1000)
        client.log_batch(rid, metrics=[MlflowMetric(m, 0.9, ts, epochs - 1) for m in FINAL_METRICS])
        end = int(time.time() * 1000)
        client.log_batch(
            rid,
            tags=[
                RunTag(Tag.STATUS.value, RunStatus.COMPLETE.value),
                RunTag(Tag.END_TIME.value, str(iso(np.array([end]))[0])),
            ],
        )
        client.set_terminated(rid, MlflowStatus.FINISHED.value, end_time=end)
        return rid
    finally:
        os.chdir(cwd)


def param_text(value) -> str:
    """As kdgat's writer stores a param: lists as JSON, the rest as str()."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


# ----------------------------------------------------------------------------------------------------------------------
# 2. Run-level plan for all runs (small: a few arrays of N)
# ----------------------------------------------------------------------------------------------------------------------
def plan_runs(n: int, epochs: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    start = np.sort(T0_MS + rng.integers(0, SPAN_MS, n))
    ds = rng.choice(len(DATASETS), n, p=DATASET_WEIGHTS)
    st = rng.choice(len(STAGES), n, p=STAGE_WEIGHTS)
    size = (rng.random(n) < 0.55).astype(np.int64)  # 0 teacher, 1 student
    kd = (size == 1) & (rng.random(n) < 0.6)
    # MLflow status: most finish; a few fail or are killed (scancel / time limit); the newest ones still run
    u = rng.random(n)
    status = np.full(n, MlflowStatus.FINISHED.value, dtype=object)
    status[u < 0.04] = MlflowStatus.FAILED.value
    status[(u >= 0.04) & (u < 0.05)] = MlflowStatus.KILLED.value
    status[np.arange(n) >= n - max(1, n // 200)] = MlflowStatus.RUNNING.value
    finished = status == MlflowStatus.FINISHED.value
    # epochs actually logged: all for finished runs, part for the others
    n_ep = np.where(finished, epochs, rng.integers(1, epochs, n))
    epoch_ms = (rng.uniform(4_000, 60_000, n) * np.array([1.0, 1.5, 0.6, 0.2])[st]).astype(np.int64)
    # KD students distil from an earlier finished teacher of the same dataset and stage
    teacher = np.full(n, -1, dtype=np.int64)
    is_teacher = (size == 0) & finished
    for d in range(len(DATASETS)):
        for s in range(len(STAGES)):
            t_idx = np.flatnonzero(is_teacher & (ds == d) & (st == s))
            s_idx = np.flatnonzero(kd & (ds == d) & (st == s))
            if len(s_idx) == 0:
                continue
            k = np.searchsorted(start[t_idx], start[s_idx])  # teachers that started before the student
            ok = k > 0
            teacher[s_idx[ok]] = t_idx[(rng.random(ok.sum()) * k[ok]).astype(np.int64)]
    kd &= teacher >= 0
    # model quality drives the final metrics; NaN mcc for a few degenerate evaluations
    lr_i = rng.integers(0, len(SWEEPS["train.lr"]), n)
    # error rate (1 - f1): multiplicative effects and log-normal noise, so no two runs tie at a clipped 1.0
    err = (
        (1 - DATASET_QUALITY[ds])
        * (1 + 0.8 * size)
        * np.where(kd, 0.8, 1.0)
        * (1 + 0.3 * np.abs(lr_i - 2))
        * rng.lognormal(0, 0.35, n)
    )
    quality = (1 - err).clip(0.3, None)
    deleted = (rng.random(n) < 0.01) & (status != MlflowStatus.RUNNING.value)
    return dict(
        start=start,
        ds=ds,
        st=st,
        size=size,
        kd=kd,
        status=status,
        n_ep=n_ep,
        epoch_ms=epoch_ms,
        teacher=teacher,
        quality=quality,
        lr_i=lr_i,
        deleted=deleted,
        uuid=np.array([os.urandom(16).hex() for _ in range(n)], dtype=object),
        sweep={k: rng.integers(0, len(v), n) for k, v in SWEEPS.items() if k != "train.lr"},
        loss_a=rng.uniform(0.5, 2.5, n),
        loss_tau=rng.uniform(8, 40, n),
        loss_floor=rng.uniform(0.01, 0.2, n),
        diverged=(status == MlflowStatus.FAILED.value) & (rng.random(n) < 0.2),
        commit_bytes=rng.integers(0, 256, (256, 20), dtype=np.uint8),
        nan_mcc=finished & (rng.random(n) < 0.002),
    )


def iso(ms: np.ndarray) -> np.ndarray:
    """UTC ISO 8601 with milliseconds, as the writer's start_time/end_time tags (datetime.isoformat)."""
    return (np.char.add(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms"), "+00:00")).astype(object)


# ----------------------------------------------------------------------------------------------------------------------
# 3. Rows of one chunk of runs, column-wise with numpy; returned as row iterators for executemany
# ----------------------------------------------------------------------------------------------------------------------
def param_columns() -> tuple[list[str], dict[tuple[int, int], dict[str, str]]]:
    """Flattened PipelineConfig keys and, per (stage, size), the preset's values as MLflow stores them (str)."""
    keys = list(PipelineConfig().flatten())
    base = {}
    for si, stage in enumerate(STAGES):
        for zi, size in enumerate(SIZES):
            cfg = preset(f"{STAGE_ARCH[Stage(stage)].value},{size}")
            cfg.train.epochs = 100
            base[(si, zi)] = {k: param_text(v) for k, v in cfg.flatten().items()}
    return keys, base


def chunk_rows(
    p: dict, lo: int, hi: int, epochs: int, keys: list[str], base: dict, template: dict, rng: np.random.Generator
):
    idx = np.arange(lo, hi)
    m = len(idx)
    uuid = p["uuid"][idx]
    status = p["status"][idx]
    n_ep = p["n_ep"][idx]
    start = p["start"][idx]
    # metric histories: rows of concurrent runs interleave by timestamp, as in a DB written by parallel jobs
    ep_total = int(n_ep.sum())
    r_of = np.repeat(np.arange(m), n_ep)
    step = np.arange(ep_total) - np.repeat(np.cumsum(n_ep) - n_ep, n_ep)
    ts = start[r_of] + (step + 1) * p["epoch_ms"][idx][r_of] + rng.integers(0, 900, ep_total)
    a, tau, floor = p["loss_a"][idx][r_of], p["loss_tau"][idx][r_of], p["loss_floor"][idx][r_of]
    train = a * np.exp(-step / tau) + floor + np.abs(rng.normal(0, 0.01, ep_total))
    val = train * rng.uniform(1.05, 1.25, ep_total) + np.abs(rng.normal(0, 0.02, ep_total))
    last = np.cumsum(n_ep) - 1  # each run's final epoch row
    nan_train = np.zeros(ep_total, dtype=bool)
    nan_train[last[p["diverged"][idx]]] = True  # diverged: NaN loss at the last epoch
    train[nan_train] = 0.0  # MLflow stores NaN as 0 with is_nan=1
    end = np.where(status == MlflowStatus.RUNNING.value, 0, ts[last] + rng.integers(2_000, 30_000, m))
    # final metrics of finished runs, logged once at the last epoch's step just before the end (as log_final does)
    fin = np.flatnonzero(status == MlflowStatus.FINISHED.value)
    q = p["quality"][idx][fin]
    nf = len(fin)
    finals = {
        Metric.F1.value: q,
        Metric.ACCURACY.value: 1 - (1 - q) * rng.uniform(0.5, 0.9, nf),
        Metric.PRECISION.value: 1 - (1 - q) * rng.uniform(0.6, 1.4, nf),
        Metric.RECALL.value: 1 - (1 - q) * rng.uniform(0.6, 1.4, nf),
        Metric.AUC.value: 1 - (1 - q) * rng.uniform(0.2, 0.5, nf),
        Metric.MCC.value: (1 - 2 * (1 - q) * rng.uniform(0.9, 1.3, nf)).clip(-1, None),
    }
    fin_nan = {k: np.zeros(nf, dtype=bool) for k in finals}
    fin_nan[Metric.MCC.value] = p["nan_mcc"][idx][fin]
    finals[Metric.MCC.value] = np.where(fin_nan[Metric.MCC.value], 0.0, finals[Metric.MCC.value])
    fin_ts = end[fin] - rng.integers(500, 1_500, nf)

    # --- metrics (every point) sorted by time; history + finals
    h_key = np.concatenate(
        [np.full(ep_total, HISTORY_METRICS[0], dtype=object), np.full(ep_total, HISTORY_METRICS[1], dtype=object)]
    )
    cols = dict(
        key=[h_key],
        value=[np.concatenate([train, val])],
        ts=[np.concatenate([ts, ts])],
        run=[np.concatenate([uuid[r_of], uuid[r_of]])],
        step=[np.concatenate([step, step])],
        nan=[np.concatenate([nan_train, np.zeros(ep_total, dtype=bool)])],
    )
    for k, v in finals.items():
        cols["key"].append(np.full(nf, k, dtype=object))
        cols["value"].append(v)
        cols["ts"].append(fin_ts)
        cols["run"].append(uuid[fin])
        cols["step"].append(n_ep[fin] - 1)
        cols["nan"].append(fin_nan[k])
    mc = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.argsort(mc["ts"], kind="stable")
    metrics = zip(
        mc["key"][order].tolist(),
        mc["value"][order].tolist(),
        mc["ts"][order].tolist(),
        mc["run"][order].tolist(),
        mc["step"][order].tolist(),
        mc["nan"][order].astype(int).tolist(),
    )

    # --- latest_metrics: value at the highest step (histories: last epoch; finals: their only point)
    lat = [
        (HISTORY_METRICS[0], train[last], ts[last], uuid, n_ep - 1, nan_train[last]),
        (HISTORY_METRICS[1], val[last], ts[last], uuid, n_ep - 1, np.zeros(m, dtype=bool)),
    ]
    for k, v in finals.items():
        lat.append((k, v, fin_ts, uuid[fin], n_ep[fin] - 1, fin_nan[k]))
    # (same step as the last epoch: the finals are later in time, so they are the latest of their key)
    latest = [
        row
        for (k, v, t, u, s, nn) in lat
        for row in zip([k] * len(u), v.tolist(), t.tolist(), s.tolist(), nn.astype(int).tolist(), u.tolist())
    ]

    # --- runs
    ds, st, size, kd = p["ds"][idx], p["st"][idx], p["size"][idx], p["kd"][idx]
    names = np.array(
        [run_name(DATASETS[d], SIZES[z], STAGES[s], bool(k)) for d, s, z, k in zip(ds, st, size, kd)], dtype=object
    )
    deleted = p["deleted"][idx]
    deleted_time = np.where(deleted, end + 86_400_000, 0)
    art = template["artifact_location"]
    runs = [
        (
            u,
            nm,
            template["source_type"],
            template["source_name"],
            template["entry_point_name"],
            template["user_id"],
            s,
            int(t0),
            int(t1) if t1 else None,
            template["source_version"],
            "deleted" if dl else "active",
            f"{art}/{u}/artifacts",
            template["experiment_id"],
            int(dt) if dl else None,
        )
        for u, nm, s, t0, t1, dl, dt in zip(
            uuid.tolist(),
            names.tolist(),
            status.tolist(),
            start.tolist(),
            end.tolist(),
            deleted.tolist(),
            deleted_time.tolist(),
        )
    ]

    # --- tags: the kdgat conventions as kdgat_core.tracking.open_run writes them, + mlflow.runName
    tag_status = np.where(
        status == MlflowStatus.FINISHED.value,
        RunStatus.COMPLETE.value,
        np.where(status == MlflowStatus.RUNNING.value, RunStatus.RUNNING.value, RunStatus.FAILED.value),
    ).astype(object)
    seed_i = p["sweep"]["train.seed"][idx]
    seeds = np.array([str(s) for s in SWEEPS["train.seed"]], dtype=object)[seed_i]
    commit_pool = np.array([bytes(b).hex() for b in p["commit_bytes"]], dtype=object)
    commits = commit_pool[((start - T0_MS) * 255 // SPAN_MS).astype(np.int64)]
    teachers = np.where(kd, p["uuid"][np.maximum(p["teacher"][idx], 0)], "")
    tag_cols: list[tuple[str, np.ndarray, np.ndarray]] = [  # (key, values, which runs have it)
        (Tag.DATASET.value, np.array(DATASETS, dtype=object)[ds], None),
        (Tag.STAGE.value, np.array(STAGES, dtype=object)[st], None),
        (Tag.MODEL_SIZE.value, np.array(SIZES, dtype=object)[size], None),
        (Tag.USE_KD.value, np.where(kd, bool_tag(True), bool_tag(False)).astype(object), None),
        (Tag.MODEL_ARCH.value, np.array([STAGE_ARCH[Stage(s)].value for s in STAGES], dtype=object)[st], None),
        (Tag.TEACHER_RUN_ID.value, teachers, kd),
        (Tag.RUN_ID.value, uuid, None),
        (Tag.STATUS.value, tag_status, None),
        (Tag.START_TIME.value, iso(start), None),
        (Tag.END_TIME.value, iso(end), status != MlflowStatus.RUNNING.value),
        (Tag.SEED.value, seeds, None),
        (
            Tag.ERROR_MSG.value,
            np.where(
                status == MlflowStatus.KILLED.value, "killed by SIGTERM", "RuntimeError: CUDA out of memory"
            ).astype(object),
            (status == MlflowStatus.FAILED.value) | (status == MlflowStatus.KILLED.value),
        ),
        (Tag.SLURM_JOB_ID.value, np.array([str(40_000_000 + i) for i in idx], dtype=object), None),
        (Tag.GIT_COMMIT.value, commits, None),
        (
            Tag.ARTIFACT_DIR.value,
            np.char.add(
                np.char.add(f"{template['artifact_root']}/", names.astype(str)), np.char.add("/", uuid.astype(str))
            ).astype(object),
            None,
        ),
        (MLFLOW_RUN_NAME_TAG, names, None),
    ]
    tags = [
        row
        for key, vals, mask in tag_cols
        for row in zip(
            [key] * (m if mask is None else int(mask.sum())),
            (vals if mask is None else vals[mask]).tolist(),
            (uuid if mask is None else uuid[mask]).tolist(),
        )
    ]

    # --- params: the run's PipelineConfig, flattened, as str(value)
    combo = st * 2 + size
    pcols: dict[str, np.ndarray] = {}
    for k in keys:
        table = np.array([base[(c // 2, c % 2)][k] for c in range(8)], dtype=object)
        pcols[k] = table[combo]
    pcols["dataset"] = np.array(DATASETS, dtype=object)[ds]
    pcols["train.lr"] = np.array([str(v) for v in SWEEPS["train.lr"]], dtype=object)[p["lr_i"][idx]]
    for k, choice in p["sweep"].items():
        pcols[k] = np.array([str(v) for v in SWEEPS[k]], dtype=object)[choice[idx]]
    pcols["kd.enabled"] = np.where(kd, "True", "False").astype(object)
    pcols["kd.teacher_run_id"] = teachers
    params = [row for k in keys for row in zip([k] * m, pcols[k].tolist(), uuid.tolist())]
    return runs, tags, params, latest, metrics, len(mc["key"])


# ----------------------------------------------------------------------------------------------------------------------
# 4. Checks: MLflow reads the DB back and agrees with SQL
# ----------------------------------------------------------------------------------------------------------------------
LEADERBOARD_FILTER = "tags.dataset = 'hcrl_sa' AND tags.stage = 'evaluation'"


def verify(out: Path, t0: float) -> None:
    import mlflow

    con = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    sql_top = con.execute(
        """SELECT r.run_uuid, lm.value FROM runs r
           JOIN experiments e ON e.experiment_id = r.experiment_id AND e.name = ?
           JOIN tags d ON d.run_uuid = r.run_uuid AND d.key = 'dataset' AND d.value = 'hcrl_sa'
           JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' AND s.value = 'evaluation'
           JOIN latest_metrics lm ON lm.run_uuid = r.run_uuid AND lm.key = 'f1' AND lm.is_nan = 0
           WHERE r.lifecycle_stage = 'active' ORDER BY lm.value DESC, r.start_time DESC, r.run_uuid LIMIT 10""",
        (EXPERIMENT_NAME,),
    ).fetchall()
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("runs", "tags", "params", "metrics", "latest_metrics")
    }
    has_stat = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0]
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.close()
    log(f"rows: {counts}; journal_mode={mode}; sqlite_stat1 present: {bool(has_stat)}", t0)
    assert not has_stat, "the DB must be left without ANALYZE statistics, as MLflow leaves it"
    assert mode == "delete", mode

    mlflow.set_tracking_uri(f"sqlite:///{out}")
    t = time.perf_counter()
    df = mlflow.search_runs(
        experiment_names=[EXPERIMENT_NAME],
        filter_string=LEADERBOARD_FILTER,
        order_by=["metrics.f1 DESC"],
        max_results=10,
    )
    dt = time.perf_counter() - t
    got = list(zip(df["run_id"], df["metrics.f1"]))
    log(f"mlflow.search_runs leaderboard: {dt:.2f} s; top f1 {got[0][1]:.4f}", t0)
    if [r for r, _ in got] != [r for r, _ in sql_top] or not np.allclose([v for _, v in got], [v for _, v in sql_top]):
        raise SystemExit(f"MLflow and SQL disagree on the leaderboard:\n{got}\n{sql_top}")
    run = mlflow.get_run(got[0][0])
    assert run.data.tags[Tag.RUN_ID.value] == got[0][0] and len(run.data.params) == len(PipelineConfig().flatten())
    hist = mlflow.MlflowClient().get_metric_history(got[0][0], HISTORY_METRICS[0])
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(len(hist))), "history steps"
    log(
        f"verified: MLflow's top 10 equals SQL's; run {got[0][0][:8]} has {len(run.data.params)} params, "
        f"{len(run.data.tags)} tags, {len(hist)} {HISTORY_METRICS[0]} points",
        t0,
    )


# ----------------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path("/work/bench_data/big.db"))
    ap.add_argument("--epochs", type=int, default=100, help="history length of finished runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="replace an existing file")
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    out = a.out.resolve()
    if out.exists():
        if not a.force:
            raise SystemExit(f"{out} exists; pass --force to replace it.")
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    need = a.runs * BYTES_PER_RUN * 1.3
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise SystemExit(f"Not enough disk at {out.parent}: {free / 1e9:.1f} GB free, need ~{need / 1e9:.1f} GB.")
    log(
        f"building {a.runs:,} runs into {out} (expect ~{a.runs * BYTES_PER_RUN / 1e9:.1f} GB; "
        f"{free / 1e9:.0f} GB free)",
        t0,
    )

    real_id = create_with_mlflow(out, a.epochs)
    log(f"schema, experiment '{EXPERIMENT_NAME}' and one real run ({real_id[:8]}) written by MLflow", t0)

    con = sqlite3.connect(out, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")  # build only: restored to DELETE at the end
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-400000")  # 400 MB page cache
    tpl = con.execute(
        """SELECT r.source_type, r.source_name, r.entry_point_name, r.source_version, r.user_id,
                                r.experiment_id, e.artifact_location FROM runs r JOIN experiments e USING (experiment_id)
                         WHERE r.run_uuid = ?""",
        (real_id,),
    ).fetchone()
    template = dict(
        zip(
            [
                "source_type",
                "source_name",
                "entry_point_name",
                "source_version",
                "user_id",
                "experiment_id",
                "artifact_location",
            ],
            tpl,
        )
    )
    template["artifact_root"] = str(out.parent / ARTIFACT_ROOT_DIR)
    # secondary indexes are rebuilt after the load (a sorted build beats 20M random b-tree inserts)
    indexes = con.execute("""SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
                             AND tbl_name IN ('metrics', 'latest_metrics', 'params', 'tags')""").fetchall()
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')

    rng = np.random.default_rng(a.seed)
    n = a.runs - 1  # plus the real MLflow run
    plan = plan_runs(n, a.epochs, rng)
    keys, base = param_columns()
    log(
        f"planned: {int(plan['kd'].sum()):,} KD students, {int((plan['status'] != 'FINISHED').sum()):,} not finished,"
        f" {int(plan['deleted'].sum()):,} deleted",
        t0,
    )
    total_metrics = 0
    for lo in range(0, n, CHUNK_RUNS):
        hi = min(n, lo + CHUNK_RUNS)
        runs, tags, params, latest, metrics, nm = chunk_rows(plan, lo, hi, a.epochs, keys, base, template, rng)
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
            "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, "
            "deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            runs,
        )
        con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
        con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
        con.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest
        )
        con.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)", metrics
        )
        con.execute("COMMIT")
        total_metrics += nm
        if (lo // CHUNK_RUNS) % 4 == 3 or hi == n:
            log(f"{hi + 1:,}/{a.runs:,} runs, {total_metrics:,} metric points", t0)
    for name, sql in indexes:
        tt = time.time()
        con.execute(sql)
        log(f"index {name} rebuilt ({time.time() - tt:.0f} s)", t0)
    last_update = int(plan["start"][-1])
    con.execute("UPDATE experiments SET last_update_time = ? WHERE name = ?", (last_update, EXPERIMENT_NAME))
    con.execute("PRAGMA journal_mode=DELETE")  # as MLflow leaves it; and no ANALYZE (MLflow never runs it)
    con.close()
    log(f"built {out} ({out.stat().st_size / 1e9:.2f} GB) in {time.time() - t0:.0f} s", t0)
    if not a.no_verify:
        verify(out, t0)
    log(f"done in {time.time() - t0:.0f} s", t0)


if __name__ == "__main__":
    main()
