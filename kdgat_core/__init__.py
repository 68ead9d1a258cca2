"""kdgat core: config, data, models, stages, tracking, query, slurm, cli."""

__version__ = "0.1.0"
