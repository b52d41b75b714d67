"""How a lookup is judged while the LLM trains: novel-transition recall@m, and the
popularity baseline it is compared with.

The popular-novel-cluster rule has its one home here (:func:`popular_novel_clusters`):
the clusters most often reached by a novel transition in the train split, most
frequent first, ties by cluster id, the history (or a user's consumed clusters)
excluded. Serving's popularity fallback (models_ml.lookup) uses it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import polars as pl


def recall_at(
    lookup: dict[tuple[int, ...], list[int]], transitions: pl.DataFrame, ms: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Novel-transition recall@m: share of (history, next_cluster_id) rows whose next
    cluster is among the first m the lookup gives for the history (a history missing
    from the lookup counts as a miss)."""
    if transitions.height == 0:
        raise ValueError("no transitions to evaluate recall on")
    hits = {m: 0 for m in ms}
    for hist, nxt in zip(transitions["history"].to_list(), transitions["next_cluster_id"].to_list()):
        got = lookup.get(tuple(int(c) for c in hist), [])
        for m in ms:
            hits[m] += int(int(nxt) in got[:m])
    return {f"recall_at_{m}": hits[m] / transitions.height for m in ms}


def popular_novel_clusters(
    counts: Mapping[int, int], cluster_ids: Iterable[int], exclude: Iterable[int] = ()
) -> list[tuple[int, int]]:
    """[(cluster_id, novel transitions reaching it)] for every cluster outside
    ``exclude``, most reached first, ties by cluster id."""
    skip = {int(c) for c in exclude}
    ranked = sorted((int(c) for c in cluster_ids if int(c) not in skip), key=lambda c: (-counts.get(c, 0), c))
    return [(c, int(counts.get(c, 0))) for c in ranked]


def novel_counts(train_transitions: pl.DataFrame) -> dict[int, int]:
    """{next_cluster_id: examples} of a frame of novel transitions."""
    return {int(c): int(n) for c, n in train_transitions.group_by("next_cluster_id").len().iter_rows()}


def popularity_lookup(
    train_transitions: pl.DataFrame, histories: Iterable[tuple[int, ...]], cluster_ids: Iterable[int], m: int
) -> dict[tuple[int, ...], list[int]]:
    """Baseline lookup: per history, the first ``m`` popular novel clusters outside it."""
    counts = novel_counts(train_transitions)
    ids = [int(c) for c in cluster_ids]
    return {tuple(h): [c for c, _ in popular_novel_clusters(counts, ids, exclude=h)[:m]] for h in histories}
