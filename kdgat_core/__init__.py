"""kdgat core: config, data, models, stages, tracking, query, slurm, cli."""


def __getattr__(name: str) -> str:
    # the version is written once, in pyproject.toml; read lazily: importlib.metadata costs startup time
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("kdgat")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
