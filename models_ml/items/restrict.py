"""Restricted top-k: the item level of the hierarchy. A slate keeps only the items of
one target cluster (the novel interest) and never an item the user consumed.

Cluster-first: the catalog is grouped by cluster once (:class:`ClusterIndex`), and a
restricted row gathers, masks and ranks only its target cluster's items, so its cost
is O(cluster size + consumed items) rather than O(catalog).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models_ml.items.sequences import PAD, UserSequences, mask_rows, row_items

NO_CLUSTER = -1  # item_cluster entry for PAD


@dataclass(frozen=True)
class ClusterIndex:
    """The catalog grouped by cluster, for cluster-first restriction.

    ``members[j]`` lists the item indices of ``clusters[j]`` padded with PAD (whose score
    is always -inf); the extra last row is all PAD and stands for "no target".
    """

    clusters: np.ndarray  # (C,) sorted cluster ids
    members: torch.Tensor  # (C + 1, max cluster size) item indices
    item_pos: torch.Tensor  # (n_items + 1,) row of each item's cluster in `clusters` (0 at PAD)
    item_slot: torch.Tensor  # (n_items + 1,) column of each item in its `members` row

    @classmethod
    def build(cls, item_cluster: np.ndarray) -> ClusterIndex:
        real = np.flatnonzero(item_cluster != NO_CLUSTER)
        clusters, pos = np.unique(item_cluster[real], return_inverse=True)
        sizes = np.bincount(pos, minlength=len(clusters))
        members = np.full((len(clusters) + 1, max(int(sizes.max(initial=0)), 1)), PAD, dtype=np.int64)
        order = np.argsort(pos, kind="stable")  # items of each cluster in catalog order
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        slot = np.arange(len(real)) - np.repeat(starts, sizes)
        members[pos[order], slot] = real[order]
        item_pos = np.zeros(len(item_cluster), dtype=np.int64)
        item_pos[real] = pos
        item_slot = np.zeros(len(item_cluster), dtype=np.int64)
        item_slot[real[order]] = slot
        return cls(clusters, torch.from_numpy(members), torch.from_numpy(item_pos), torch.from_numpy(item_slot))

    def rows_of(self, cluster_ids: np.ndarray) -> torch.Tensor:
        """Row in ``members`` for each cluster id; unknown ids and NO_CLUSTER get the
        all-PAD row (an empty candidate set)."""
        ids = np.asarray(cluster_ids, dtype=np.int64)
        n = len(self.clusters)
        if n == 0:
            return torch.zeros(len(ids), dtype=torch.long)
        j = np.searchsorted(self.clusters, ids).clip(max=n - 1)
        return torch.from_numpy(np.where(self.clusters[j] == ids, j, n))


def restricted_topk(
    scores: torch.Tensor,
    slate_size: int,
    exclude: UserSequences | None = None,
    exclude_rows: np.ndarray | None = None,
    index: ClusterIndex | None = None,
    target_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``slate_size`` item indices per row after masking.

    - ``exclude``/``exclude_rows``: row i loses the items of sequence ``exclude_rows[i]``
      (default: row i of ``exclude``).
    - ``index``/``target_rows`` (B,): row i keeps only the items of cluster
      ``index.members[target_rows[i]]``. Cluster-first: only those candidates are gathered,
      masked and ranked, O(B x cluster size + consumed) instead of O(B x catalog), and
      ``scores`` is left untouched. Without a target, ``scores`` is masked in place.
    Returns (values, indices), each (B, min(slate_size, candidates)); slots past the eligible
    items hold -inf values (callers cut the slate there).
    """
    if target_rows is None:
        scores[:, PAD] = float("-inf")
        if exclude is not None:
            mask_rows(scores, exclude, exclude_rows)
        return torch.topk(scores, min(slate_size, scores.shape[1] - 1), dim=1)
    if index is None:
        raise ValueError("target_rows need a ClusterIndex")
    cand = index.members[target_rows]  # (B, S)
    values = scores.gather(1, cand).masked_fill_(cand == PAD, float("-inf"))
    if exclude is not None:
        r, c = (torch.from_numpy(a) for a in row_items(exclude, exclude_rows))
        # a consumed item matters only if it lies in its row's target cluster
        hit = index.item_pos[c] == target_rows[r]
        values[r[hit], index.item_slot[c[hit]]] = float("-inf")
    values, j = torch.topk(values, min(slate_size, cand.shape[1]), dim=1)
    return values, cand.gather(1, j)


def popularity_key(counts: np.ndarray) -> torch.Tensor:
    """Exact float64 key: count first, then lower catalog index, so popular slates and
    their ties are deterministic (torch.topk does not order ties)."""
    n = len(counts)
    key = counts.astype(np.float64) * n + (n - 1 - np.arange(n))
    out = torch.from_numpy(key)
    out[PAD] = float("-inf")
    return out
