"""Dagster code location: `dagster dev` / `dagster asset materialize -m orchestration`."""

from orchestration.definitions import defs

__all__ = ["defs"]
