"""The LLM layer end to end, as the Dagster assets (and scripts) call it:
read inputs from the warehouse, fine-tune, run all-pairs inference, write back.

Warehouse connections are only held while reading or writing, never while a model
trains or infers (DuckDB allows one writer).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from models_ml import config, gates, plots, tables
from models_ml import warehouse as wh
from models_ml.llm import base as base_lm
from models_ml.llm import finetune as ft
from models_ml import counts
from models_ml.llm import alignment, evaluation, fusion, pairs, prompts, residual
from models_ml.llm.decoding import LM
from models_ml.llm.finetune import LlmInputs
from models_ml.llm.tokens import PromptEncoder, level_descriptions

CURRENT_FILE = "current.json"
CURVE_FILE = "training_curve.png"  # next to the adapter
FINETUNE_HISTORY_SCHEMA = tables.schema(config.FINETUNE_HISTORY)


def llm_root() -> Path:
    """Adapters (one directory per model_version) and pair-inference shards."""
    return config.models_dir() / "llm"


def read_inputs(con: duckdb.DuckDBPyConnection, level: int, k: int) -> LlmInputs:
    """The LLM's inputs at (level, k). Fine-tuning reads the train split's 'fit' fold of
    training_pairs; the 'validation' fold of the train users is kept apart for choosing
    weights, and eval for judging."""
    clusters = wh.read_table(con, config.CLUSTERS, ["level", "cluster_id", "description"])
    descriptions = level_descriptions(clusters, level)
    cols = "history, next_cluster_id, split, fold"
    for table in (config.TRAINING_PAIRS, config.NOVEL_TRANSITION_EXAMPLES):
        if not wh.table_exists(con, table):
            raise LookupError(f"{table} does not exist; run the dbt assets first")
    # ordered: dbt's parallel build leaves row order arbitrary, and training batches and
    # the eval sample follow row order; the same data must give the same model and figures
    pairs_df = wh.query(
        con, f"select {cols} from {config.TRAINING_PAIRS} where level = ? and k = ? order by all", [level, k]
    )
    # user_id last: it only orders rows equal in every other column (the order above stays)
    trans = wh.query(
        con, f"select {cols}, next_events, user_id from {config.NOVEL_TRANSITION_EXAMPLES} where level = ? and k = ? "
        "order by all", [level, k]
    )
    _check_ids(pairs_df, descriptions, config.TRAINING_PAIRS, level, k)
    _check_ids(trans, descriptions, config.NOVEL_TRANSITION_EXAMPLES, level, k)
    train = pairs_df.filter((pl.col("split") == "train") & (pl.col("fold") == "fit"))
    if train.height == 0:
        raise ValueError(f"{config.TRAINING_PAIRS} has no train rows (fit fold) for level {level}, k {k}")
    ev = trans.filter(pl.col("split") == "eval")
    if ev.height == 0:
        raise ValueError(f"{config.NOVEL_TRANSITION_EXAMPLES} has no eval rows for level {level}, k {k}")
    train_trans = trans.filter(pl.col("split") == "train")
    validation = train_trans.filter(pl.col("fold") == "validation")
    return LlmInputs(level, k, descriptions, train, ev, train_trans, validation)


def read_llm_inputs(con: duckdb.DuckDBPyConnection, level: int, k: int) -> LlmInputs:
    """:func:`read_inputs` with the configured prompt evidence (IE_LLM_EVIDENCE) or
    residual resampling of the training pairs (IE_LLM_RESIDUAL)."""
    inputs = read_inputs(con, level, k)
    evidence, tau = config.llm_evidence(), config.llm_residual()
    if evidence > 0 and tau > 0:
        raise ValueError("IE_LLM_EVIDENCE and IE_LLM_RESIDUAL cannot be combined: set one of them to 0")
    inputs = with_residual(con, inputs, tau)
    return with_evidence(con, inputs, evidence, lookup_histories(inputs))


def _fit_fold(con: duckdb.DuckDBPyConnection, table: str, inputs: LlmInputs) -> pl.DataFrame:
    """(user_id, history, next_cluster_id) of ``table``'s fit fold at the inputs' level and K."""
    return wh.query(
        con,
        f"""select user_id, history, next_cluster_id from {table}
            where level = ? and k = ? and split = 'train' and fold = 'fit' order by all""",
        [inputs.level, inputs.k],
    )


def with_residual(con: duckdb.DuckDBPyConnection, inputs: LlmInputs, tau: float) -> LlmInputs:
    """``inputs`` with the training pairs resampled towards what the smoothed counts get
    wrong (models_ml.llm.residual): weights p_counts(next | history) ** -tau, p_counts
    from the fit fold's counts without the example's own user; ``tau`` 0 leaves them."""
    if tau <= 0:
        return inputs
    count_rows = counts.read_counts(con, inputs.level, inputs.k)
    model = counts.fitted(count_rows, inputs.descriptions, inputs.validation_transitions)

    def moves_of(frame: pl.DataFrame) -> list[counts.Move]:
        return [(u, tuple(int(c) for c in h), int(n)) for u, h, n in frame.iter_rows()]

    moves = moves_of(_fit_fold(con, config.NOVEL_TRANSITION_EXAMPLES, inputs))
    pairs_frame = _fit_fold(con, config.TRAINING_PAIRS, inputs)
    if pairs_frame.height != inputs.train_pairs.height:
        raise ValueError(f"{config.TRAINING_PAIRS} changed while the LLM inputs were read; re-run")
    examples = moves_of(pairs_frame)
    p = counts.leave_user_out_probs(model.fit, moves, examples, model.smoothing.alpha, model.smoothing.beta)
    keep = residual.resample([h for _, h, _ in examples], residual.weights(p, tau))
    return replace(inputs, train_pairs=pairs_frame[keep].select("history", "next_cluster_id"))


def with_evidence(con: duckdb.DuckDBPyConnection, inputs: LlmInputs, n: int,
                  histories: list[tuple[int, ...]]) -> LlmInputs:
    """``inputs`` with collaborative evidence in the prompts: every history's ``n`` most
    frequent successors among the fit fold (successor_counts.n_fit, so the validation
    users' own moves never show), and each training example's evidence without its own
    user's moves from that history (the answer is not leaked)."""
    if n <= 0:
        return inputs
    fit = counts.counts_from_frame(counts.read_counts(con, inputs.level, inputs.k), inputs.descriptions, "n_fit")
    own = _fit_fold(con, config.NOVEL_TRANSITION_EXAMPLES, inputs)
    mine: dict[tuple, dict[int, int]] = {}
    for user, h, c in own.iter_rows():
        slot = mine.setdefault((user, tuple(int(x) for x in h)), {})
        slot[int(c)] = slot.get(int(c), 0) + 1
    users = wh.query(
        con,
        f"""select history, next_cluster_id, user_id from {config.TRAINING_PAIRS}
            where level = ? and k = ? and split = 'train' and fold = 'fit' order by all""",
        [inputs.level, inputs.k],
    )
    if users.height != inputs.train_pairs.height:
        raise ValueError(f"{config.TRAINING_PAIRS} changed while the LLM inputs were read; re-run")
    evidence = [
        list(map(list, counts.top_successors(fit, tuple(int(x) for x in h), n, minus=mine.get((u, tuple(int(x) for x in h))))))
        for h, _, u in users.iter_rows()
    ]
    pairs_frame = users.select("history", "next_cluster_id").with_columns(
        pl.Series("evidence", evidence, dtype=pl.List(pl.List(pl.Int64)))
    )
    by_history = {h: counts.top_successors(fit, h, n) for h in histories}
    return replace(inputs, train_pairs=pairs_frame, evidence=by_history)


def _check_ids(df: pl.DataFrame, descriptions: dict[int, str], table: str, level: int, k: int) -> None:
    known = set(descriptions)
    for hist, nxt in zip(df["history"].to_list(), df["next_cluster_id"].to_list()):
        bad = [c for c in [*hist, nxt] if c not in known]
        if bad or len(hist) != k:
            raise ValueError(
                f"{table}: row history={hist} next={nxt} at level {level} "
                + (f"names unknown cluster(s) {bad}" if bad else f"has a history of length {len(hist)}, not k={k}")
                + f"; {config.CLUSTERS} and {table} are out of step: re-run dbt"
            )


def finetune_config() -> ft.FinetuneConfig:
    lr = config.llm_learning_rate()
    return ft.FinetuneConfig(
        steps=config.llm_finetune_steps(),
        batch_histories=config.llm_batch_size(),
        eval_every=config.llm_eval_every(),
        seed=config.llm_seed(),
        **({} if lr is None else {"lr": lr}),
    )


def run_finetune(inputs: LlmInputs, cfg: ft.FinetuneConfig | None = None, root: Path | None = None,
                 progress: bool = True, on_eval=None) -> ft.FinetuneResult:
    """Fine-tune on ``inputs`` and make the adapter the current one."""
    root = root or llm_root()
    result = ft.finetune(
        inputs,
        cfg or finetune_config(),
        root,
        base_lm.base_model_path(),
        version=config.llm_model_version(),
        progress=progress,
        on_eval=on_eval,
    )
    write_finetune_curve(result, inputs.level, inputs.k)
    set_current(root, result.model_version)
    return result


def write_finetune_curve(result: ft.FinetuneResult, level: int, k: int) -> Path:
    """The fine-tuning curve as ``<adapter>/training_curve.png``, against the zero-shot
    and popularity recall@5 and the refresh gate's match-rate floor."""
    lines = {
        "zero-shot recall@5": result.history[0].recall_at_5,
        "popularity recall@5": result.baselines.get("popularity_recall_at_5", float("nan")),
        "refresh gate: match rate": config.gate_min_match_rate(),
    }
    return plots.plot_finetune_curve(finetune_history_frame(result, level, k), result.adapter_dir / CURVE_FILE, lines,
                                     title=f"LoRA fine-tuning {result.model_version} (eval sample; step 0 = zero-shot)")


def set_current(root: Path, version: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".current.")
    with os.fdopen(fd, "w") as fh:
        json.dump({"model_version": version}, fh)
    os.replace(tmp, root / CURRENT_FILE)


def current_adapter_dir(root: Path | None = None) -> Path:
    """The adapter pinned by IE_LLM_MODEL_VERSION, else the last one fine-tuned."""
    root = root or llm_root()
    version = config.llm_model_version()
    if version is None:
        pointer = root / CURRENT_FILE
        if not pointer.is_file():
            raise ft.AdapterError(f"no fine-tuned adapter under {root} ({CURRENT_FILE} missing): run the fine-tuning asset first")
        try:
            version = json.loads(pointer.read_text())["model_version"]
        except (OSError, ValueError, KeyError) as exc:
            raise ft.AdapterError(f"{pointer} is corrupt: {exc}") from exc
    return root / version


def finetune_history_frame(result: ft.FinetuneResult, level: int, k: int) -> pl.DataFrame:
    return pl.DataFrame(
        [(result.model_version, level, k, p.step, p.loss, p.match_rate, p.recall_at_1, p.recall_at_5, p.elapsed_s)
         for p in result.history],
        schema=FINETUNE_HISTORY_SCHEMA,
        orient="row",
    )


def write_finetune_history(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> int:
    """Replace this model version's rows of ml.finetune_history, keeping other versions."""
    frame = frame.select([pl.col(c).cast(t) for c, t in FINETUNE_HISTORY_SCHEMA.items()])
    return wh.replace_partition(con, config.FINETUNE_HISTORY, frame.sort("step"), by=("model_version",))


def load_inference_model(adapter_dir: Path, descriptions: dict[int, str], level: int, k: int):
    """(LM with the adapter merged, PromptEncoder, training metadata), checked against
    the level's current clusters."""
    meta = ft.read_training(adapter_dir)
    trained = {int(c): d for c, d in meta["descriptions"].items()}
    if int(meta["level"]) != level or trained != descriptions:
        raise ft.AdapterError(
            f"adapter {adapter_dir.name} was fine-tuned on level {meta['level']} with "
            f"{len(trained)} cluster descriptions that differ from the current {len(descriptions)} of "
            f"{config.CLUSTERS} level {level}: re-run the fine-tuning asset"
        )
    if int(meta["k"]) != k:
        raise ft.AdapterError(f"adapter {adapter_dir.name} was fine-tuned for k={meta['k']}, not k={k}")
    model, tok, meta = ft.load_finetuned(adapter_dir)
    return LM(model), PromptEncoder(tok, descriptions), meta


def lookup_histories(inputs: LlmInputs) -> list[tuple[int, ...]]:
    """The histories the lookups cover: all (IE_LLM_HISTORIES=all, what serving needs),
    those of the level's novel transitions in any split ('observed') or in the eval split
    and the validation fold ('evaluated')."""
    mode = config.llm_histories()
    if mode == "all":
        return pairs.all_histories(inputs.descriptions, inputs.k)
    frames = {"observed": (inputs.train_transitions, inputs.eval_transitions),
              "evaluated": (inputs.validation_transitions, inputs.eval_transitions)}[mode]
    return sorted({tuple(int(c) for c in h) for f in frames for h in f["history"].to_list()})


def lookup_depth(descriptions: dict[int, str], k: int) -> int:
    """Clusters per history in the LLM lookups: IE_LLM_TOP_M, at most every cluster
    outside the history."""
    return min(config.llm_top_m(), len(descriptions) - k)


def run_pair_inference(
    adapter_dir: Path, descriptions: dict[int, str], level: int, k: int, m: int, progress: bool = True, on_shard=None,
    histories: list[tuple[int, ...]] | None = None, evidence=None, shards: list[int] | None = None,
) -> tuple[pl.DataFrame, dict]:
    lm, enc, meta = load_inference_model(adapter_dir, descriptions, level, k)
    work = pairs.work_dir_for(Path(adapter_dir) / "pairs", level, k, m, descriptions)
    rows, stats = pairs.run_all_pairs(lm, enc, level, k, m, meta["model_version"], work, progress, on_shard,
                                      histories=histories, evidence=evidence, shards=shards)
    stats["tokens_processed"] = lm.tokens_processed
    return rows, stats


def staged_folder(level: int, k: int) -> Path:
    """Where the pair-inference partitions of (level, k) stage their rows."""
    return config.staged_dir() / config.NOVEL_INTEREST_TRANSITIONS / f"level{level}_k{k}"


def run_pair_partition(
    adapter_dir: Path, inputs: LlmInputs, m: int, partition: int, n_partitions: int, progress: bool = True,
) -> tuple[Path, pl.DataFrame, dict]:
    """Partition ``partition`` of ``n_partitions`` of the pair inference: its shards'
    rows (resuming from the adapter's shard files as a single run does), staged as one
    Parquet file. Returns (file, rows, statistics)."""
    histories = lookup_histories(inputs)
    shards = pairs.partition_shards(histories, inputs.k, partition, n_partitions)
    if shards:
        rows, stats = run_pair_inference(adapter_dir, inputs.descriptions, inputs.level, inputs.k, m, progress,
                                         histories=histories, evidence=inputs.evidence, shards=shards)
    else:  # more partitions than shards: an empty file says this one is done
        rows, stats = pl.DataFrame(schema=pairs.LOOKUP_SCHEMA), {"histories": 0, "shards": 0, "shards_resumed": 0,
                                                                 "shards_computed": 0}
    path = pairs.write_staged(rows, staged_folder(inputs.level, inputs.k), partition)
    return path, rows, {**stats, "shard_ids": shards}


def read_staged_pairs(adapter_dir: Path, inputs: LlmInputs, m: int, n_partitions: int) -> pl.DataFrame:
    """The union of the staged partitions of the current adapter, validated
    (:func:`models_ml.llm.pairs.read_staged`)."""
    version = ft.read_training(adapter_dir)["model_version"]
    return pairs.read_staged(staged_folder(inputs.level, inputs.k), lookup_histories(inputs), inputs.k, m,
                             len(inputs.descriptions), version, n_partitions)


def read_pair_inference(
    adapter_dir: Path, descriptions: dict[int, str], level: int, k: int, m: int, histories: list[tuple[int, ...]]
) -> pl.DataFrame:
    """The fine-tuned model's own rows of the last pair inference, from its shards."""
    meta = ft.read_training(adapter_dir)
    work = pairs.work_dir_for(Path(adapter_dir) / "pairs", level, k, m, descriptions)
    return pairs.read_completed(work, histories, k, m, len(descriptions), meta["model_version"])


ZERO_SHOT = "zero_shot"
LLM_ONLY = "llm_only"  # the fine-tuned model's own lookup, before fusion (kept for comparison)
COUNTS_ALIGNMENT = "counts_alignment"  # the alignment scorer without the LLM: what the LLM adds


@dataclass(frozen=True)
class LookupVariant:
    """One way of turning the LLM's rows into a lookup, with what it was chosen with."""

    name: str  # llm_only, llm_fusion, llm_alignment, counts_alignment
    rows: pl.DataFrame  # LOOKUP_SCHEMA
    fusion: fusion.Fusion | None = None
    alignment: alignment.Alignment | None = None


def lookup_variants(
    inputs: LlmInputs, llm_rows: pl.DataFrame, count_rows: pl.DataFrame, m: int
) -> dict[str, LookupVariant]:
    """The LLM's own rows and the mechanisms built on them (weights on the validation
    fold): 'none' (llm_only), 'fusion' (models_ml.llm.fusion) and 'alignment'
    (models_ml.llm.alignment re-ranking the fused top m, with the
    counts' top m where held-out validation users favour it), with 'counts_alignment', the
    alignment scorer without the LLM's features re-ranking the smoothed counts (an
    ablation, never shipped). Without validation
    transitions (a tiny data set) only 'none' exists. Every variant's model_version ends
    with the digest of the lookup it serves (:func:`_versioned`)."""
    out = {"none": LookupVariant(LLM_ONLY, llm_rows)}
    if inputs.validation_transitions.height == 0 or llm_rows.height == 0:
        return _versioned(out)
    histories = sorted({tuple(int(c) for c in h) for h in llm_rows["history"].to_list()})
    model = counts.fitted(count_rows, inputs.descriptions, inputs.validation_transitions)
    ids = model.final.cluster_ids
    where = model.final.index
    a, b = model.smoothing.alpha, model.smoothing.beta
    p_llm_all = fusion.llm_matrix(llm_rows, histories, ids)
    row_of = {h: i for i, h in enumerate(histories)}
    if "user_id" not in inputs.validation_transitions.columns:
        raise ValueError("the validation transitions need user_id: the alignment scorer's candidate sets are "
                         "compared on folds by user")
    val = inputs.validation_transitions.with_columns(
        pl.col("history").map_elements(lambda h: tuple(int(c) for c in h) in row_of, return_dtype=pl.Boolean)
        .alias("__known")
    ).filter(pl.col("__known"))
    val_hist = [tuple(int(c) for c in h) for h in val["history"].to_list()]
    targets = val["next_cluster_id"].to_list()
    bounds = tuple(int(x) for x in config.dbt_vars()["history_seen_bounds"])
    p_llm_val = p_llm_all[[row_of[h] for h in val_hist]]
    p_counts_val, p0_fit = counts.smoothed_probs(model.fit, val_hist, a, b), counts.popularity_prior(model.fit)
    seen_val = np.array([model.fit.history_count(h) for h in val_hist])
    p_counts_all, p0_all = counts.smoothed_probs(model.final, histories, a, b), counts.popularity_prior(model.final)
    seen_all = np.array([model.final.history_count(h) for h in histories])
    m_select = counts.selection_m(len(ids), inputs.k)
    min_distinct = fusion.markov_distinct_top1(model.final, histories)
    min_entropy = fusion.top1_entropy(p_counts_all)  # markov_smoothed's evenness: the aligned lookups keep at least it
    chosen = fusion.choose(
        p_llm_val, p_counts_val, p0_fit, seen_val, targets, ids, bounds, m_select,
        p_llm_all, p_counts_all, p0_all, seen_all, min_distinct, a, b,
    )
    fused_all = fusion.fused_probs(p_llm_all, p_counts_all, p0_all, fusion.segments(seen_all, bounds),
                                   chosen.llm_weights, chosen.debias)
    base_version = llm_rows["model_version"][0]
    shard = dict(zip((tuple(h) for h in llm_rows["history"].to_list()), llm_rows["shard"].to_list()))

    def rows_of(probs: np.ndarray, version: str) -> pl.DataFrame:
        rows = counts.lookup_rows(probs, ids, histories, "llm", inputs.level, inputs.k, version, depth=m)
        rows = rows.drop("policy").with_columns(
            pl.Series("shard", [shard[tuple(h)] for h in rows["history"].to_list()], dtype=pl.Int32)
        )
        return rows.select(list(pairs.LOOKUP_SCHEMA))

    counts_version = model.version(config.split_mode())
    out["fusion"] = LookupVariant(
        "llm_fusion", rows_of(fused_all, f"{base_version}+fused-{chosen.digest()}-{counts_version}"), chosen
    )
    # feedback alignment: a scorer of (history, cluster) fitted on the validation
    # transitions' engagement re-ranks the fused top m; the same scorer without the LLM
    # re-ranks the smoothed counts' top m (the counts_alignment ablation)
    from models_ml import clusters

    if len(bounds) + 1 != len(alignment.SEGMENTS):
        raise ValueError(f"var history_seen_bounds {list(bounds)} must cut {len(alignment.SEGMENTS)} segments "
                         f"({', '.join(alignment.SEGMENTS)}) for the alignment scorer")
    emb = clusters.embed_texts([inputs.descriptions[int(c)] for c in ids])
    seg_val, seg_all = fusion.segments(seen_val, bounds), fusion.segments(seen_all, bounds)
    fused_val = fusion.fused_probs(p_llm_val, p_counts_val, p0_fit, seg_val, chosen.llm_weights, chosen.debias)
    n_val, n_all = counts.history_counts(model.fit, val_hist), counts.history_counts(model.final, histories)
    first_val = counts.first_cluster_probs(model.fit, val_hist, b)
    first_all = counts.first_cluster_probs(model.final, histories, b)
    sim_val = alignment.similarity_matrix(emb, val_hist, where)
    sim_all = alignment.similarity_matrix(emb, histories, where)
    engagement = np.log1p(val["next_events"].fill_null(1).to_numpy().astype(np.float64))
    for name, with_llm, base_val, base_all in (("alignment", True, fused_val, fused_all),
                                               ("counts_alignment", False, p_counts_val, p_counts_all)):
        x_val = alignment.features(p_llm_val if with_llm else None, p_counts_val, n_val, first_val, p0_fit,
                                   seen_val, seg_val, sim_val)
        x_all = alignment.features(p_llm_all if with_llm else None, p_counts_all, n_all, first_all, p0_all,
                                   seen_all, seg_all, sim_all)
        fitted_alignment, aligned_all = _align(
            x_val, x_all, base_val, base_all, targets, engagement, ids, where, np.log(p0_fit), np.log(p0_all), m,
            m_select, min_distinct, min_entropy=min_entropy,
            nonnegative=range(len(alignment.LLM_FEATURES)) if with_llm else (),
            counts_val=p_counts_val, counts_all=p_counts_all, users=val["user_id"].to_list() if with_llm else None)
        if with_llm:
            version = f"{base_version}+aligned-{fitted_alignment.digest()}-{chosen.digest()}-{counts_version}"
            out[name] = LookupVariant("llm_alignment", rows_of(aligned_all, version), chosen, fitted_alignment)
        else:
            version = f"counts_alignment:{fitted_alignment.digest()}:{counts_version}"
            out[name] = LookupVariant(COUNTS_ALIGNMENT, rows_of(aligned_all, version), None, fitted_alignment)
    return _versioned(out)


def _versioned(variants: dict[str, LookupVariant]) -> dict[str, LookupVariant]:
    """Each variant's model_version ends with the digest of what it serves
    (pairs.rows_digest): the names before it say how the lookup was made, the digest
    whether two lookups so made are the same."""
    return {name: replace(v, rows=pairs.versioned(v.rows)) for name, v in variants.items()}


def _align(x_val, x_all, base_val, base_all, targets, engagement, ids, where, log_p0_fit, log_p0_all, m,
           m_select, min_distinct, min_entropy=0.0, nonnegative=(), counts_val=None, counts_all=None,
           users=None) -> tuple[alignment.Alignment, np.ndarray]:
    """The alignment scorer fitted on the validation transitions whose target is one of
    its candidates (the weights of the features ``nonnegative`` kept >= 0), then the
    popularity discount by a balance rule judged on the lookup as served, after the
    exposure floor (alignment.cover_top1, which moves only the histories it needs and
    never the first m): the best validation recall (recall@``m_select``, then MRR) among
    the discounts whose floored lookup has at least ``min_distinct`` distinct top-1
    clusters (the floor gives those cheaply) and a top-1 entropy of at least
    ``min_entropy`` (evenness, which the floor does not buy), or, where none has, the best
    validation recall; ties go to more distinct top-1 before the floor, then the smaller
    discount. Returns the scorer and every history's re-ranked, floored lookup.

    The candidates are the base lookup's first m; given the smoothed counts
    (``counts_*``) and the validation transitions' ``users``, also those and the counts'
    first m, where that set has the higher cross-fitted validation recall (folds by
    user, alignment.cross_fit_scores; MRR breaks ties, then the base's first m)."""
    target_col = np.array([where[int(t)] for t in targets])
    sets = {alignment.TOP_M: (alignment.top_mask(base_val, m), alignment.top_mask(base_all, m))}
    if counts_val is not None and users is not None:
        sets[alignment.WITH_COUNTS] = (sets[alignment.TOP_M][0] | alignment.top_mask(counts_val, m),
                                       sets[alignment.TOP_M][1] | alignment.top_mask(counts_all, m))
    cv: dict[str, tuple[float, float]] = {}
    if len(sets) > 1:
        folds = alignment.user_folds(users)
        for name, (allowed_val, _) in sets.items():
            held_out = alignment.cross_fit_scores(x_val, allowed_val, target_col, engagement, folds,
                                                  nonnegative=tuple(nonnegative))
            if held_out is None:
                cv = {}
                break
            cv[name] = counts.score_lookup(held_out, ids, targets, m_select)
    chosen = max(cv, key=lambda s: (*counts.comparable(cv[s]), s == alignment.TOP_M)) if cv \
        else alignment.TOP_M
    allowed_val, allowed_all = sets[chosen]
    inside = allowed_val[np.arange(len(targets)), target_col]
    fitted_alignment = replace(
        alignment.fit(x_val[inside], allowed_val[inside], target_col[inside], engagement[inside],
                      nonnegative=tuple(nonnegative)),
        candidates=chosen, cv_recall=tuple((name, r) for name, (r, _) in cv.items()))
    best = None
    for gamma in fusion.DEBIAS_GRID:
        candidate = replace(fitted_alignment, debias=gamma)
        val_ranked = alignment.rerank(base_val, alignment.scores(x_val, base_val > 0, candidate, log_p0_fit),
                                      allowed_val)
        recall, mrr = counts.score_lookup(val_ranked, ids, targets, m_select)
        all_ranked = alignment.rerank(base_all, alignment.scores(x_all, base_all > 0, candidate, log_p0_all),
                                      allowed_all)
        # judged as served, with the floor: a discount that buys first answers the floor gives
        # in a few moves costs recall for nothing (demo world 2: gamma 2 cost 2 points of
        # validation recall@5 for 2 clusters); evenness the floor cannot fake is kept apart
        covered, moves = alignment.cover_top1(all_ranked, m)
        balanced = fusion.distinct_top1(covered) >= min_distinct and fusion.top1_entropy(covered) >= min_entropy
        key = (balanced, *counts.comparable((recall, mrr)), fusion.distinct_top1(all_ranked), -gamma)
        if best is None or key > best[0]:
            best = (key, candidate, covered, moves)
    _, fitted, covered, moves = best
    return replace(fitted, top1_floor=alignment.TOP1_FLOOR, floor_moves=moves), covered


def zero_shot_version(base_path: Path, descriptions: dict[int, str]) -> str:
    h = hashlib.sha256()
    ft.base_fingerprint(base_path, h)
    h.update(json.dumps([sorted(descriptions.items()), asdict(prompts.PROMPT)]).encode())
    return "zeroshot-" + h.hexdigest()[:12]


def run_zero_shot_inference(
    descriptions: dict[int, str], level: int, k: int, m: int, progress: bool = True,
    histories: list[tuple[int, ...]] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """The base model, without an adapter, through the same prompt and constrained
    all-pairs inference as the fine-tuned one (the ``zero_shot`` policy). Its version,
    like the fine-tuned lookups', ends with the digest of the rows it serves."""
    base_path = base_lm.base_model_path()
    tok = base_lm.load_tokenizer(base_path)
    lm = LM(base_lm.load_model(base_path))
    lm.pad_id = int(tok.pad_token_id)
    enc = PromptEncoder(tok, descriptions)
    version = zero_shot_version(base_path, descriptions)
    work = pairs.work_dir_for(llm_root() / ZERO_SHOT / version, level, k, m, descriptions)
    rows, stats = pairs.run_all_pairs(lm, enc, level, k, m, version, work, progress, histories=histories)
    stats["tokens_processed"] = lm.tokens_processed
    return pairs.versioned(rows), stats


def lookup_metrics(rows: pl.DataFrame, inputs: LlmInputs, m: int = 5) -> dict[str, float]:
    """Recall@1/@m of the lookup on the full eval split, with the popularity baseline on
    the same transitions (the asset's metadata and the lookup's refresh gate;
    lookup_evaluation gives the same overall figures with intervals, and every segment)."""
    lookup: dict[tuple[int, ...], list[int]] = {}
    for h, c in zip(rows["history"].to_list(), rows["next_cluster_id"].to_list()):
        lookup.setdefault(tuple(h), []).append(int(c))
    ours = evaluation.recall_at(lookup, inputs.eval_transitions, (1, m))
    hist = {tuple(h) for h in inputs.eval_transitions["history"].to_list()}
    pop = evaluation.popularity_lookup(inputs.train_transitions, hist, inputs.descriptions, m)
    base = evaluation.recall_at(pop, inputs.eval_transitions, (1, m))
    return {**ours, **{f"popularity_{key}": v for key, v in base.items()}, "eval_transitions": inputs.eval_transitions.height}


def adapter_gate(adapter_dir: Path) -> gates.GateResult:
    """The adapter's refresh gate (models_ml/gates.py) on its final training figures: its
    unconstrained match rate."""
    final = ft.read_training(adapter_dir).get("final")
    if final is None or "match_rate" not in final:
        raise ft.AdapterError(f"{adapter_dir / ft.TRAINING_FILE} lacks the final figures the refresh gate reads")
    return gates.finetune_gate(float(final["match_rate"]))


def lookup_gate(metrics: dict[str, float], m: int = 5) -> gates.GateResult:
    """The lookup's refresh gate on :func:`lookup_metrics`' figures for the rows that
    would be served: their recall@m on the eval split against popularity's."""
    return gates.lookup_gate(float(metrics[f"recall_at_{m}"]), float(metrics[f"popularity_recall_at_{m}"]), m)
