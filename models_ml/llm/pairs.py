"""All-histories inference: the lookup table of novel interests.

Every ordered history of K distinct clusters at the level (N x (N-1) for K = 2) gets
its top-m novel clusters (models_ml.llm.decoding: trie-constrained, history
excluded, exact best-first search).

Work sharing: up to ``max_rows`` histories at a time go into one token tree
(models_ml.llm.decoding.TokenTree): the instruction and each distinct leading run of
clusters are run once and their KV cache shared, so at K = 2 a history adds only its
last cluster and the prompt tail. Several shards are batched into one tree.

Sharding and resume: shards are the histories with the same first cluster (K >= 2),
or fixed-size chunks (K = 1); partition p of n (a Dagster partition, one GPU worker)
takes the shards s with s % n == p (:func:`partition_shards`) and stages its rows in
its own Parquet file (:func:`write_staged`), which :func:`read_staged` validates and
unions.
Each finished shard is written to a parquet file (temporary name, then renamed), in
a work directory keyed by the model version, level, K, m and the cluster set; a
rerun after a crash skips the shards already there. Only when every shard is done
is the warehouse table replaced, in one transaction (:func:`write_lookup`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

import duckdb
import polars as pl

from models_ml import config, tables
from models_ml import warehouse as wh
from models_ml.llm.decoding import LM, topm_prompts
from models_ml.llm.tokens import ClusterSetError, Evidence, PromptEncoder

LOOKUP_SCHEMA = tables.schema(config.NOVEL_INTEREST_TRANSITIONS)
MAX_ROWS = 160  # histories per forward pass (four K = 2 shards at N = 40)
TREE_ROWS = 40  # histories per token tree (a batch row); bounds its dense attention mask


def all_histories(cluster_ids: Iterable[int], k: int) -> list[tuple[int, ...]]:
    """Every ordered history of ``k`` distinct clusters: N! / (N-k)!."""
    ids = sorted(int(c) for c in cluster_ids)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ids) < 2:
        raise ClusterSetError(f"the level has {len(ids)} cluster(s); novel-interest inference needs at least 2")
    if len(ids) <= k:
        raise ClusterSetError(f"the level has {len(ids)} clusters: a history of k={k} leaves no novel cluster")
    return list(itertools.permutations(ids, k))


def infer_histories(
    lm: LM,
    enc: PromptEncoder,
    histories: Sequence[Sequence[int]],
    m: int,
    max_rows: int = MAX_ROWS,
    tree_rows: int = TREE_ROWS,
    evidence: Mapping[tuple[int, ...], Evidence] | None = None,
) -> dict[tuple[int, ...], list[tuple[int, float]]]:
    """{history: [(cluster_id, score), ...] best first} for any set of histories:
    ``max_rows`` histories per forward pass, at most ``tree_rows`` per token tree;
    ``evidence`` gives each history's collaborative evidence segment (prompts.py)."""
    hist = sorted(dict.fromkeys(tuple(int(c) for c in h) for h in histories))
    for h in hist:
        enc.check_history(h)
    # Whole groups (same leading clusters) per batch, so trees are not split needlessly.
    chunks: list[list[tuple[int, ...]]] = []
    for _, members in itertools.groupby(hist, key=lambda h: h[:-1]):
        members = list(members)
        for s in range(0, len(members), max_rows):
            part = members[s : s + max_rows]
            if not chunks or len(chunks[-1]) + len(part) > max_rows:
                chunks.append([])
            chunks[-1].extend(part)
    out: dict[tuple[int, ...], list[tuple[int, float]]] = {}
    for chunk in chunks:
        prompts = [[enc.head_ids, *enc.history_segments(h, None if evidence is None else evidence[h])] for h in chunk]
        res = topm_prompts(lm, enc.trie, prompts, [frozenset(h) for h in chunk], m, tree_rows)
        out.update(zip(chunk, res))
    return out


def shard_plan(histories: Sequence[tuple[int, ...]], k: int, max_rows: int = MAX_ROWS) -> dict[int, list[tuple[int, ...]]]:
    """{shard: histories}: by first cluster for K >= 2, fixed-size chunks for K = 1."""
    if k >= 2:
        plan: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        for h in histories:
            plan[h[0]].append(h)
        return dict(sorted(plan.items()))
    return {i: list(histories[s : s + max_rows]) for i, s in enumerate(range(0, len(histories), max_rows))}


def rows_frame(
    results: dict[tuple[int, ...], list[tuple[int, float]]], level: int, k: int, model_version: str, shard: int
) -> pl.DataFrame:
    recs = [
        (level, k, list(h), rank, cid, score, model_version, shard)
        for h, res in results.items()
        for rank, (cid, score) in enumerate(res, start=1)
    ]
    return pl.DataFrame(recs, schema=LOOKUP_SCHEMA, orient="row")


ROWS_TAG = "+rows-"  # a lookup's model_version ends with this and rows_digest (versioned)


def rows_digest(rows: pl.DataFrame) -> str:
    """8 hex digits of what a lookup serves: every history's clusters in rank order.
    The same adapter version trained or run on another CPU rounds differently and can
    rank a cluster differently; the digest makes that a different model_version. Row
    order does not matter; scores do not enter (they differ in the last digits)."""
    key = rows.select(pl.col("history").list.eval(pl.element().cast(pl.Int64)), pl.col("rank").cast(pl.Int64),
                      pl.col("next_cluster_id").cast(pl.Int64)).sort("history", "rank")
    h = hashlib.sha256()
    for history, rank, cluster in key.iter_rows():
        h.update(f"{','.join(map(str, history))}:{rank}:{cluster};".encode())
    return h.hexdigest()[:8]


def versioned(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (one model_version) with :func:`rows_digest` appended to its version; no
    rows, nothing to name."""
    if rows.height == 0:
        return rows
    versions = rows["model_version"].unique().to_list()
    if len(versions) != 1:
        raise ValueError(f"a lookup has one model_version, these rows have {sorted(map(str, versions))}")
    return rows.with_columns(pl.lit(f"{versions[0]}{ROWS_TAG}{rows_digest(rows)}").alias("model_version"))


def work_dir_for(base: Path, level: int, k: int, m: int, descriptions: dict[int, str]) -> Path:
    """Shard files of one (model, level, K, m, cluster set): a changed cluster set never
    resumes from stale shards."""
    digest = hashlib.sha256(json.dumps(sorted(descriptions.items())).encode()).hexdigest()[:12]
    return base / f"level{level}_k{k}_m{m}_{digest}"


def run_all_pairs(
    lm: LM,
    enc: PromptEncoder,
    level: int,
    k: int,
    m: int,
    model_version: str,
    work_dir: Path,
    progress: bool = True,
    on_shard: Callable[[int, pl.DataFrame], None] | None = None,
    max_rows: int = MAX_ROWS,
    histories: Sequence[tuple[int, ...]] | None = None,
    evidence: Mapping[tuple[int, ...], Evidence] | None = None,
    shards: Collection[int] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Every history's top-m (or those of ``histories``), shard by shard, resuming from
    ``work_dir``; with ``shards``, only those shards of the plan (one partition's).
    Returns the lookup rows and run statistics (shards computed vs resumed)."""
    from tqdm.auto import tqdm

    histories = all_histories(enc.descriptions, k) if histories is None else sorted(set(histories))
    plan = shard_plan(histories, k)
    if shards is not None:
        # the plan of every history, then a subset: shard ids (and the resume files) are
        # the same as in one run over all of them
        wanted = set(shards)
        plan = {s: members for s, members in plan.items() if s in wanted}
        histories = [h for members in plan.values() for h in members]
    work_dir.mkdir(parents=True, exist_ok=True)
    frames: list[pl.DataFrame] = []
    stats = {"histories": len(histories), "shards": len(plan), "shards_resumed": 0, "shards_computed": 0}
    bar = tqdm(total=len(histories), desc=f"pair inference level {level} k {k}", disable=not progress, unit="hist")
    todo: list[int] = []
    for shard, members in plan.items():
        path = _shard_path(work_dir, shard)
        df = _read_shard(path)
        if df is not None and _shard_complete(df, members, m, len(enc.descriptions), k, model_version):
            frames.append(df)
            stats["shards_resumed"] += 1
            bar.update(len(members))
        else:
            todo.append(shard)
    # Small shards are batched into one token tree (bigger matmuls), then written one by one.
    batches: list[list[int]] = []
    for shard in todo:
        if batches and sum(len(plan[s]) for s in batches[-1]) + len(plan[shard]) <= max_rows:
            batches[-1].append(shard)
        else:
            batches.append([shard])
    for batch in batches:
        results = infer_histories(lm, enc, [h for s in batch for h in plan[s]], m, max_rows, evidence=evidence)
        for shard in batch:
            df = rows_frame({h: results[h] for h in plan[shard]}, level, k, model_version, shard)
            path = _shard_path(work_dir, shard)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            df.write_parquet(tmp)
            os.replace(tmp, path)
            frames.append(df)
            stats["shards_computed"] += 1
            bar.update(len(plan[shard]))
            if on_shard is not None:
                on_shard(shard, df)
    bar.close()
    out = pl.concat(frames).sort("history", "rank") if frames else pl.DataFrame(schema=LOOKUP_SCHEMA)
    return out, stats


def read_completed(
    work_dir: Path, histories: Sequence[tuple[int, ...]], k: int, m: int, n_clusters: int, model_version: str
) -> pl.DataFrame:
    """The rows of a finished run from its shard files (no model needed); a missing or
    incomplete shard is an error naming it."""
    frames = []
    for shard, members in shard_plan(sorted(set(histories)), k).items():
        path = _shard_path(work_dir, shard)
        df = _read_shard(path)
        if df is None or not _shard_complete(df, members, m, n_clusters, k, model_version):
            raise FileNotFoundError(
                f"{path} is missing or incomplete for model {model_version}: re-run the pair inference "
                "(asset ml/novel_interest_transitions)"
            )
        frames.append(df)
    return pl.concat(frames).sort("history", "rank") if frames else pl.DataFrame(schema=LOOKUP_SCHEMA)


class StagedPartitionError(RuntimeError):
    """A partition's staged file is missing, unreadable or does not cover its histories."""


def partition_shards(histories: Sequence[tuple[int, ...]], k: int, partition: int, n_partitions: int) -> list[int]:
    """The shards (of the plan of every history) that partition ``partition`` of
    ``n_partitions`` computes: shard % n_partitions == partition."""
    if not 0 <= partition < n_partitions:
        raise ValueError(f"partition {partition} is outside 0..{n_partitions - 1}")
    return [s for s in shard_plan(sorted(set(histories)), k) if s % n_partitions == partition]


def staged_path(folder: Path, partition: int) -> Path:
    return folder / f"partition_{partition:04d}.parquet"


def write_staged(rows: pl.DataFrame, folder: Path, partition: int) -> Path:
    """One partition's rows as a Parquet file, atomically (temporary name, then rename):
    a reader sees the previous file or the new one, never half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = staged_path(folder, partition)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    rows.select([pl.col(c).cast(t) for c, t in LOOKUP_SCHEMA.items()]).write_parquet(tmp)
    os.replace(tmp, path)
    return path


def read_staged(
    folder: Path, histories: Sequence[tuple[int, ...]], k: int, m: int, n_clusters: int, model_version: str,
    n_partitions: int,
) -> pl.DataFrame:
    """The union of every partition's staged rows, checked: each file readable with the
    lookup schema, written by ``model_version``, and every expected history present
    exactly once with its ranks 1..min(m, n - k). Any failure names the file."""
    per = min(m, n_clusters - k)
    plan = shard_plan(sorted(set(histories)), k)
    frames = []
    for partition in range(n_partitions):
        path = staged_path(folder, partition)
        expected = {h for s, members in plan.items() if s % n_partitions == partition for h in members}
        where = f"{path} (partition {partition} of {n_partitions})"
        if not path.exists():
            raise StagedPartitionError(f"{where} is missing: materialize that partition of the pair inference")
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - truncated, not Parquet, disk trouble: all name the file
            raise StagedPartitionError(f"{where} is corrupt ({type(exc).__name__}: {exc}): re-materialize it") from exc
        if df.schema != pl.Schema(LOOKUP_SCHEMA):
            raise StagedPartitionError(f"{where} has columns {dict(df.schema)}, not the lookup schema: re-materialize it")
        versions = set(df["model_version"].unique().to_list())
        if versions - {model_version}:
            raise StagedPartitionError(
                f"{where} was written by model {sorted(versions)}, not the current {model_version}: re-materialize it")
        got = df.group_by("history").agg(pl.col("rank").sort().alias("ranks"))
        found = {tuple(h) for h in got["history"].to_list()}
        bad_ranks = [tuple(h) for h, ranks in got.iter_rows() if ranks != list(range(1, per + 1))]
        if found != expected or bad_ranks:
            missing, extra = sorted(expected - found), sorted(found - expected)
            raise StagedPartitionError(
                f"{where} does not cover its histories exactly once: {len(missing)} missing {missing[:3]}, "
                f"{len(extra)} not its own {extra[:3]}, {len(bad_ranks)} without ranks 1..{per} exactly once "
                f"{sorted(bad_ranks)[:3]}: re-materialize it")
        frames.append(df)
    return pl.concat(frames).sort("history", "rank")


def _shard_path(work_dir: Path, shard: int) -> Path:
    return work_dir / f"shard_{shard:06d}.parquet"


def _read_shard(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pl.read_parquet(path)
    except Exception:  # noqa: BLE001 - an unreadable shard (crash, disk trouble) is recomputed
        return None


def _shard_complete(df: pl.DataFrame, members, m: int, n: int, k: int, version: str) -> bool:
    per = min(m, n - k)
    return (
        df.schema == pl.Schema(LOOKUP_SCHEMA)
        and df.height == per * len(members)
        and set(df["model_version"].unique().to_list()) == {version}
        and df.select(pl.col("history").n_unique()).item() == len(members)
    )


def write_lookup(
    con: duckdb.DuckDBPyConnection,
    rows: pl.DataFrame,
    level: int,
    k: int,
    chunk_rows: int = 50_000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Replace the (level, k) rows of the lookup table, keeping other levels and K,
    atomically: new rows are staged in chunks and swapped in one transaction, so a
    failure at any point leaves the previous table as it was."""
    if rows.height == 0:
        raise ValueError(f"refusing to write an empty lookup for level {level}, k {k}")
    bad = rows.filter((pl.col("level") != level) | (pl.col("k") != k))
    if bad.height:
        raise ValueError(f"lookup rows for level {level}, k {k} include {bad.height} rows of another level or k")
    rows = rows.select([pl.col(c).cast(t) for c, t in LOOKUP_SCHEMA.items()])
    return wh.replace_partition(
        con, config.NOVEL_INTEREST_TRANSITIONS, rows, by=("level", "k"), chunk_rows=chunk_rows, on_chunk=on_chunk
    )
