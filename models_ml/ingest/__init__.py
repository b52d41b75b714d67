"""Data sources -> validated raw frames (raw.interactions, raw.items, raw.rejected_rows).

``load_source(source, path)`` reads one of ``config.SOURCES``; every source goes
through :mod:`models_ml.ingest.validate`, so the rules for bad rows are the same
everywhere: unusable rows are set aside in ``rejected`` with a reason, missing
files or columns, columns of the wrong type and an empty result raise
:class:`IngestError`. The reject-rate gate (``validate.check_reject_shares``) is
applied by the ingestion asset before anything is published.
"""

from __future__ import annotations

from pathlib import Path

from models_ml import config
from models_ml.ingest.validate import IngestError, IngestResult

__all__ = ["IngestError", "IngestResult", "load_source"]


def load_source(source: str, path: Path | None) -> IngestResult:
    """Load ``source`` ('demo' | 'movielens' | 'files'); ``path`` is the directory for
    movielens/files and is ignored by demo (sized by IE_DEMO_* env vars)."""
    if source not in config.SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(config.SOURCES)}")
    path = Path(path) if path is not None else None
    if source == "demo":
        from models_ml.ingest import demo

        return demo.generate()
    if source == "movielens":
        from models_ml.ingest import movielens

        return movielens.load(path)
    from models_ml.ingest import files

    return files.load(path)
