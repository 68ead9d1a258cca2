#!/usr/bin/env bash
# Train the whole pipeline (teacher, student, distilled student; all four stages) and print the results table.
#   scripts/train_pipeline.sh [dataset] [variant] [tracking-uri]     e.g. scripts/train_pipeline.sh hcrl_sa cpu
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-hcrl_sa}
VARIANT=${2:-cpu}
URI=${3:-${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}}
exec .venv/bin/python -m kdgat_core.stages.pipeline --dataset "$DATASET" --variant "$VARIANT" --tracking-uri "$URI"
