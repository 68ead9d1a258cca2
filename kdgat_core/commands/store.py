"""`kdgat` commands about the tracking store itself: the global `--read-uri`, and `kdgat migrate SRC DEST`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.callback()
    def _options(
        read_uri: Annotated[
            Optional[str],
            typer.Option(
                "--read-uri",
                help="The database readers open when jobs write through an MLflow server, e.g. "
                "postgresql://reader@host/mlflow (else KDGAT_READ_URI, kdgat.toml \\[tracking] read_uri, the tracking URI).",
            ),
        ] = None,
    ) -> None:
        """kdgat: CAN intrusion-detection experiments on GNNs - data, training, tracking, analytics, SLURM."""
        from kdgat_core.query.stores import set_read_uri_flag

        set_read_uri_flag(read_uri)
