"""Finding runs on the writer side (through MLflow's client: a writer process never opens the DB with DuckDB)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdgat_core.config import (
    KdgatError,
    ModelSize,
    PipelineConfig,
    RunStatus,
    Stage,
    Tag,
    bool_tag,
    mask_uri,
    parse_bool_tag,
    run_name,
)
from kdgat_core.tracking.run import CONFIG_FILE
from kdgat_core.tracking.store import Store, get_store, with_retry


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_run(
    dataset: str,
    stage: str | Stage,
    model_size: str | ModelSize,
    use_kd: bool | None = None,
    status: str | RunStatus | None = RunStatus.COMPLETE,
    tracking_uri: str | None = None,
) -> str | None:
    """The newest matching run's id (by start time), or None; a missing DB file is not created."""
    store = get_store(tracking_uri, create=False)
    if store is None:
        return None
    clauses = [
        f"tags.{Tag.DATASET} = {_quote(dataset)}",
        f"tags.{Tag.STAGE} = {_quote(str(stage))}",
        f"tags.{Tag.MODEL_SIZE} = {_quote(str(model_size))}",
    ]
    if use_kd is not None:
        # ILIKE: stores written by other tools spell it true/false
        clauses.append(f"tags.{Tag.USE_KD} ILIKE {_quote(bool_tag(use_kd))}")
    if status is not None:
        clauses.append(f"tags.{Tag.STATUS} = {_quote(str(status))}")
    runs = with_retry(
        store.client.search_runs,
        [store.experiment_id],
        filter_string=" AND ".join(clauses),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        what="search_runs",
    )
    return runs[0].info.run_id if runs else None


def _get_run(store: Store, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return with_retry(store.client.get_run, run_id, what="get_run")
    except MlflowException:
        raise KdgatError(f"No run with id '{run_id}' in {mask_uri(store.uri)}.") from None


def _existing_store(tracking_uri: str | None) -> Store:
    store = get_store(tracking_uri, create=False)
    if store is None:
        raise KdgatError(
            "The tracking database has no kd-gat-pipeline experiment (or does not exist); "
            "check --tracking-uri, MLFLOW_TRACKING_URI or kdgat.toml."
        )
    return store


def run_artifact_dir(run_id: str, tracking_uri: str | None = None) -> Path:
    """A run's artifact folder, from its `artifact_dir` tag (else rebuilt from its tags and the DB's location)."""
    store = _existing_store(tracking_uri)
    tags = _get_run(store, run_id).data.tags
    if tags.get(Tag.ARTIFACT_DIR.value):
        return Path(tags[Tag.ARTIFACT_DIR.value])
    try:
        name = run_name(
            tags[Tag.DATASET.value],
            tags[Tag.MODEL_SIZE.value],
            tags[Tag.STAGE.value],
            parse_bool_tag(tags.get(Tag.USE_KD.value)) is True,
        )
    except KeyError:
        raise KdgatError(
            f"Run {run_id} has no kdgat tags (dataset, stage, model_size); it was not written by kdgat."
        ) from None
    return store.artifact_root / name / run_id


def load_run_config(run_id: str, tracking_uri: str | None = None) -> PipelineConfig:
    """The PipelineConfig a run was started with: its config.json, else rebuilt from its params."""
    store = _existing_store(tracking_uri)
    run = _get_run(store, run_id)
    folder = run.data.tags.get(Tag.ARTIFACT_DIR.value)
    if folder and (Path(folder) / CONFIG_FILE).is_file():
        return PipelineConfig.from_dict(json.loads((Path(folder) / CONFIG_FILE).read_text()))
    if not run.data.params:
        raise KdgatError(f"Run {run_id} has neither a {CONFIG_FILE} nor params to rebuild its configuration from.")
    return config_from_params(run.data.params)


def config_from_params(params: dict[str, str]) -> PipelineConfig:
    """Params are strings: parse each back to the type of the default config's field."""
    cfg = PipelineConfig()
    defaults = cfg.flatten()
    for key, text in params.items():
        if key not in defaults:
            continue  # a param kdgat no longer has (older runs): ignore rather than refuse the whole run
        default = defaults[key]
        if isinstance(default, bool):
            value: Any = text == "True"
        elif isinstance(default, list):
            value = json.loads(text)
        elif isinstance(default, int):
            value = int(float(text))
        elif isinstance(default, float):
            value = float(text)
        else:
            value = text
        cfg.set(key, value, coerce=False)
    return cfg
