"""The schema of kdgat.toml (pydantic): every section and key kdgat reads, nothing else.

Imported only when a kdgat.toml is found (`config.load_settings`), so commands without one never import pydantic.
`[cluster.resources]` values are checked where they are used (`kdgat_core.slurm.resources`): keys and formats there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TrackingSection(_Section):
    uri: StrictStr | None = None
    read_uri: StrictStr | None = None  # the database readers open when writers go through an MLflow server


class DataSection(_Section):
    root: StrictStr | None = None
    cache_dir: StrictStr | None = None


class DatasetSection(_Section):
    train_splits: list[StrictStr] | None = None
    test_splits: list[StrictStr] | None = None
    description: StrictStr | None = None


class ClusterSection(_Section):
    executor: StrictStr | None = None
    templates: StrictStr | None = None
    module_purge: StrictBool | None = None
    modules: list[StrictStr] | StrictStr | None = None
    setup: list[StrictStr] | StrictStr | None = None
    venv: StrictStr | None = None
    conda_env: StrictStr | None = None
    exports: dict[str, StrictStr] | None = None
    kdgat: StrictStr | None = None
    workdir: StrictStr | None = None
    resources: dict[str, Any] | None = None


class ViewSection(_Section):
    """[views.<name>]: a saved view (kdgat_core.query.saved_views)."""

    where: StrictStr | None = None
    columns: list[StrictStr] | None = None
    sort: StrictStr | None = None
    descending: StrictBool | None = None
    group_by: list[StrictStr] | None = None


class WatchMetricRule(_Section):
    name: StrictStr
    above: float | int | None = None
    below: float | int | None = None


class WatchSection(_Section):
    """`kdgat watch` (kdgat_core.query.events for the rules, kdgat_core.commands.cluster for the sinks)."""

    interval: float | int | None = None
    events: list[StrictStr] | None = None
    terminal: StrictBool | None = None
    tmux: StrictBool | None = None
    command: StrictStr | None = None
    webhook: StrictStr | None = None
    metric: list[WatchMetricRule] | None = None


class SettingsFile(_Section):
    tracking: TrackingSection | None = None
    data: DataSection | None = None
    datasets: dict[str, DatasetSection] | None = None
    cluster: ClusterSection | None = None
    views: dict[str, ViewSection] | None = None
    watch: WatchSection | None = None
