"""Dagster code location: `dagster dev` / `dagster asset materialize -m orchestration`.

``defs`` is loaded on first access (PEP 562), so light modules of this package (the
``ie-dbt`` entry point, run bookkeeping) import without the whole graph; Dagster's
loader still finds it through ``dir()``.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from orchestration.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
