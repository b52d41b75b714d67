"""Asset metadata helpers shared by the asset modules."""

import polars as pl


def markdown_table(df: pl.DataFrame) -> str:
    """A small frame as a Markdown table for the Dagster UI (floats to 4 places)."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(fmt(v) for v in row) + " |" for row in df.iter_rows())
