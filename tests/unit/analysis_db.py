"""A synthetic tracking DB for the analysis tests, written by MLflow's real client in a subprocess.

Evaluation runs on two datasets x six seeds: teachers, students and KD students (teacher_run_id tags). What is
planted, and what the tests must find:
* `f1` = 0.80 + 0.06 if train.lr = 0.01 (the one param that moves F1) + 0.01 for KD students (the KD effect) +
  noise (sd 0.002); `train.batch_size` and `model.dropout` vary but do nothing;
* `val_f1` history over 8 epochs peaks at epoch 5 (best = final + 0.02) and ends at the final value, so
  `max(val_f1)` differs from `val_f1` and `argmax(val_f1)` is 5; `val_loss` falls to its minimum at epoch 6 then
  rises a little;
* two runs without an f1 and one with f1 = NaN, in the groups of other runs (the group statistics must skip them).
"""

from __future__ import annotations

WRITE_ANALYSIS_DB = r"""
import sys, json, random
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

uri = "sqlite:///" + sys.argv[1]
client = MlflowClient(uri)
exp = client.create_experiment("kd-gat-pipeline")
rng = random.Random(7)
T0 = 1_700_000_000_000
clock = [0]
ids = {}

def run(dataset, size, kd, seed, lr, batch, dropout, f1, teacher=None, history=True):
    clock[0] += 1
    start = T0 + clock[0] * 60_000
    name = f"{dataset}/{size}_evaluation{'_kd' if kd else ''}"
    r = client.create_run(exp, start_time=start, run_name=name)
    rid = r.info.run_id
    tags = {"dataset": dataset, "stage": "evaluation", "model_size": size, "use_kd": str(kd), "seed": str(seed),
            "status": "complete", "teacher_run_id": teacher or ""}
    params = {"train.lr": str(lr), "train.batch_size": str(batch), "model.dropout": str(dropout),
              "train.seed": str(seed)}
    metrics = []
    if f1 is not None:
        metrics.append(Metric("f1", f1, start + 99_000, 0))
        if history:
            for step in range(1, 9):
                v = f1 + 0.02 * (1 - abs(step - 5) / 4) if step != 8 else f1
                metrics.append(Metric("val_f1", v, start + step * 1000, step))
                metrics.append(Metric("val_loss", 0.5 - 0.05 * min(step, 6) + 0.01 * max(step - 6, 0), start + step * 1000, step))
    client.log_batch(rid, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()], metrics=metrics)
    client.set_terminated(rid, "FINISHED", end_time=start + 100_000)
    return rid

for dataset in ("d1", "d2"):
    for seed in range(6):
        lr = 0.01 if seed % 2 else 0.001
        batch = (32, 64)[(seed // 2) % 2]
        base = 0.80 + (0.06 if lr == 0.01 else 0.0)
        noise = lambda: rng.gauss(0, 0.002)
        t = run(dataset, "teacher", False, seed, lr, batch, rng.choice([0.1, 0.3, 0.5]), base + 0.03 + noise())
        s = run(dataset, "student", False, seed, lr, batch, rng.choice([0.1, 0.3, 0.5]), base + noise())
        k = run(dataset, "student", True, seed, lr, batch, rng.choice([0.1, 0.3, 0.5]), base + 0.01 + noise(), teacher=t)
        ids[f"{dataset}/{seed}/teacher"], ids[f"{dataset}/{seed}/student"], ids[f"{dataset}/{seed}/kd"] = t, s, k
# runs without a value in groups that have values: missing f1 twice, NaN once
ids["missing1"] = run("d1", "student", False, 0, 0.001, 32, 0.1, None)
ids["missing2"] = run("d2", "teacher", False, 1, 0.01, 32, 0.3, None)
ids["nan"] = run("d1", "teacher", False, 2, 0.001, 64, 0.5, float("nan"), history=False)
json.dump(ids, open(sys.argv[2], "w"))
"""
