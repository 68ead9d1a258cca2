"""kdgat_core.stages: one module per stage (autoencoder, curriculum, fusion, evaluation) plus the KD losses.

`run_stage(cfg, tracking_uri=None, data_root=None) -> StageResult(run_id, metrics)`; torch is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdgat_core.config import PipelineConfig
    from kdgat_core.stages.runner import StageResult


def run_stage(cfg: PipelineConfig, tracking_uri: str | None = None, data_root: str | None = None) -> StageResult:
    from kdgat_core.stages.runner import run_stage as _run_stage

    return _run_stage(cfg, tracking_uri=tracking_uri, data_root=data_root)


__all__ = ["run_stage"]
