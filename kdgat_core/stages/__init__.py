"""kdgat_core.stages: one module per stage (autoencoder, curriculum, fusion, evaluation) plus the KD losses.

`run_stage(cfg, tracking_uri=None, data_root=None) -> StageResult(run_id, metrics)`; torch is imported lazily.
"""

from __future__ import annotations


def run_stage(cfg, tracking_uri=None, data_root=None):
    from kdgat_core.stages.runner import run_stage as _run_stage

    return _run_stage(cfg, tracking_uri=tracking_uri, data_root=data_root)


__all__ = ["run_stage"]
