"""How close is each lookup to the best any history-level lookup can do on a demo world?
The demo generator knows its world, so it can draw a population far larger than the
demo's from the same world: same items, theme transitions and start themes, fresh users
(demo.DemoWorld). Read through the warehouse's own clusters, that population's novel
moves are the count table of infinite training data, and ranking by it is the ceiling
of a lookup keyed by the history. This scores that `ceiling` lookup on the warehouse's
eval transitions beside the shipped `llm` lookup, the count policies and the scorer
without the LLM, overall and by how often train users left the history. Prints JSON.

    .venv/bin/python bench/demo_ceiling.py [--db warehouse/interest_explorer.duckdb] [--seed 7]
    .venv/bin/python bench/demo_ceiling.py --seeds 1 2 3 4 [--split-mode time]   # demo_worlds.py's, pooled

The population is read the way the dbt marts read a user: positive events (var
positive_threshold) mapped to clusters, repeats collapsed, a label is a first visit
(strict novelty) and its history the two clusters before it. Ties and histories the
population never left fall back to the novel moves after the last cluster. No lookup
can know a user's other past clusters, so no lookup keyed by the history beats the
ceiling but by chance.

Two diagnostics split what the ceiling knows: `pair_blind` ranks by the population's
moves after the history's last and first clusters alone (their mix chosen on the
population, never on eval), so it knows the world but not the history's own row;
`counts_pair_blind` ranks train's counts of the history first and backs off to
`pair_blind`: the counts with the best back-off the world allows. `counts_train_blind` is
the same with that back-off and its mix learned from train's moves alone (in sample).

`posterior` is a bound a learner can reach from train: it knows the world (items, each
theme's successors, the generator's weights) but not each theme history's own preferred
next theme, which the generator drew from the two themes' successors (demo.pair_prior).
It draws one population per hypothesis about those draws (pair_hypotheses: every
candidate of every history is one; the same random streams as the ceiling's) and ranks a
history's moves by the hypotheses' rows, weighted by their prior (through each cluster's
majority theme; uniform where both clusters share one) times the likelihood of train's
moves from that history. Its settings (POSTERIOR_KAPPA, the hypotheses) were fixed before
it was scored. About eight more populations a world. `counts_spike` is its structure
learned from train alone: each history sends a share rho of its moves to one favourite of
its own, drawn from a mix of train's moves after its last and first clusters (weight w),
the rest as after its last cluster; rho and w are chosen by leave-one-move-out recall on
train's moves.

The policies' hits are recomputed here from the lookup tables (top-m of the stored
ranks, m = SELECTION_M) and checked against lookup_evaluation's values: the script
stops if they disagree. Intervals: 95% percentile bootstrap over eval users, paired
(every policy on the same draws), --boot replicates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models_ml import config  # noqa: E402
from models_ml import warehouse as wh  # noqa: E402
from models_ml.cli.report import COUNT_POLICIES  # noqa: E402
from models_ml.counts import SELECTION_M  # noqa: E402
from models_ml.ingest import demo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_worlds  # noqa: E402  (its world paths and pooling)

ORACLE = "ceiling"
PAIR_BLIND = "pair_blind"  # the population's back-off alone
COUNTS_PAIR_BLIND = "counts_pair_blind"  # train's counts of the history, then that back-off
COUNTS_TRAIN_BLIND = "counts_train_blind"  # the same with the back-off learned from train alone
POSTERIOR = "posterior"  # the world known but each history's own draw, inferred from train
ABLATION = "counts_alignment"
POSTERIOR_KAPPA = 1.0  # pseudo-moves of a hypothesis' last-cluster back-off in its row of a history
SPIKE = "counts_spike"  # the posterior's structure, learned from train alone
SPIKE_GRID = {"rho": np.round(np.arange(0.1, 0.75, 0.1), 1), "w": (0.0, 0.25, 0.5, 0.75, 1.0)}


def novel_table(users: np.ndarray, clusters: np.ndarray, n: int) -> np.ndarray:
    """counts[a, b, c] of novel moves to c after the last two distinct clusters (a, b),
    read as novel_transition_examples reads a user (strict novelty, K = 2); events of a
    user in time order, users contiguous."""
    keep = np.ones(len(clusters), dtype=bool)
    keep[1:] = (clusters[1:] != clusters[:-1]) | (users[1:] != users[:-1])  # collapse repeats
    u, t = users[keep], clusters[keep]
    # a first visit: no earlier position of the same (user, cluster)
    order = np.lexsort((np.arange(len(t)), t, u))
    first = np.ones(len(t), dtype=bool)
    su, st = u[order], t[order]
    first[order[1:]] = (su[1:] != su[:-1]) | (st[1:] != st[:-1])
    ok = np.zeros(len(t), dtype=bool)
    ok[2:] = (u[2:] == u[:-2]) & first[2:]  # two earlier positions of the same user
    idx = np.flatnonzero(ok)
    out = np.zeros((n, n, n))
    np.add.at(out, (t[idx - 2], t[idx - 1], t[idx]), 1.0)
    return out


def in_first(score: np.ndarray, a: int, b: int, y: int, m: int) -> bool:
    """Whether y is among the m best-scored clusters outside the history (a, b); ties by
    cluster id. score is changed in place."""
    score[[a, b]] = -np.inf
    return int(y) in np.argsort(-score, kind="stable")[:m]


def ranked_hits(hist: list[list[int]], label: np.ndarray, counts, backoff, m: int) -> np.ndarray:
    """Whether each label is in the first m clusters of counts(a, b) (a history's counted
    moves), the history's clusters excluded; ties and uncounted clusters by backoff(a, b)
    (shares, summing to at most 1), then by cluster id."""
    # a count of 1 outweighs any back-off share
    return np.array([in_first(counts(a, b) + backoff(a, b) / 2, a, b, y, m) for (a, b), y in zip(hist, label)],
                    dtype=bool)


def shares(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(rows.sum(axis=-1, keepdims=True), 1.0)


def ceiling_hits(hist: list[list[int]], label: np.ndarray, table: np.ndarray, m: int) -> np.ndarray:
    """ranked_hits by the table's row for the history, backed off to the novel moves
    after the last cluster."""
    after_last = shares(table.sum(axis=0))
    return ranked_hits(hist, label, lambda a, b: table[a, b], lambda a, b: after_last[b], m)


def blend(w: float, after_last: np.ndarray, after_first: np.ndarray):
    """The pair-blind back-off of history (a, b): w P(c | last b) + (1 - w) P(c | first a)."""
    return lambda a, b: w * after_last[b] + (1 - w) * after_first[a]


def pair_blind(table: np.ndarray, m: int) -> tuple[float, np.ndarray, np.ndarray]:
    """What the population says about a history without its own row: w P(c | last b) +
    (1 - w) P(c | first a), w (0, 0.1, .., 1) the best for the population's own recall@m.
    Returns (w, last-cluster shares, first-cluster shares)."""
    after_last, after_first = shares(table.sum(axis=0)), shares(table.sum(axis=1))
    a_idx, b_idx = np.nonzero(table.sum(axis=2))
    best = (-1.0, 0.0)
    for w in np.round(np.linspace(0.0, 1.0, 11), 1):
        score = w * after_last[b_idx] + (1 - w) * after_first[a_idx]  # (histories, clusters)
        score[np.arange(len(a_idx)), a_idx] = -np.inf
        score[np.arange(len(a_idx)), b_idx] = -np.inf
        top = np.argsort(-score, axis=1, kind="stable")[:, :m]
        hit = np.take_along_axis(table[a_idx, b_idx], top, axis=1).sum()
        best = max(best, (hit, -w))  # ties: the smaller w
    w = -best[1]
    return float(w), after_last, after_first


def item_clusters(world: demo.DemoWorld, cluster_of: dict[str, int]) -> np.ndarray:
    """The warehouse's cluster of each item of the world (rows of world.items)."""
    missing = set(world.items["item_id"].to_list()) - set(cluster_of)
    if missing:
        raise SystemExit(f"demo_ceiling: {len(missing)} items of the demo world (e.g. {sorted(missing)[0]}) have no "
                         f"cluster in {config.ITEM_CLUSTERS}: pass the warehouse's --seed and IE_DEMO_ITEMS")
    return np.array([cluster_of[i] for i in world.items["item_id"].to_list()])


def simulated_table(world: demo.DemoWorld, item_cluster: np.ndarray, n_users: int, events_per_user: float,
                    positive: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """The novel-move table of a fresh population of the world, its positive events read
    through the warehouse's clusters (item_clusters); drawn in chunks of users
    (independent streams) to bound memory."""
    n = int(item_cluster.max()) + 1
    table = np.zeros((n, n, n))
    for i, rng in enumerate(np.random.default_rng(seed).spawn(-(-n_users // chunk))):
        size = min(chunk, n_users - i * chunk)
        users, item_idx, rating = world.events(rng, size, int(size * events_per_user))
        pos = rating >= positive
        table += novel_table(users[pos], item_cluster[item_idx[pos]], n)
    return table


def pair_hypotheses(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hypotheses about every theme history's preferred next theme (demo.pair_prior's
    support): hypothesis j gives (a, b) its j-th candidate (theme order), cycling, with J the
    most candidates any history has, so each candidate of each history is some hypothesis.
    Returns (pair[j, a, b], prior[j, a, b]): a candidate's prior mass is shared by the
    hypotheses that give it, so prior sums to 1 over j for each (a, b)."""
    t = succ.shape[0]
    cands = {(a, b): np.flatnonzero(demo.pair_prior(succ, a, b)) for a in range(t) for b in range(t) if a != b}
    n_hyp = max(len(c) for c in cands.values())
    pair = np.zeros((n_hyp, t, t), dtype=np.int64)
    prior = np.full((n_hyp, t, t), 1.0 / n_hyp)  # a = b: no pair draw (one theme so far)
    for (a, b), c in cands.items():
        w = demo.pair_prior(succ, a, b)
        for j in range(n_hyp):
            pair[j, a, b] = c[j % len(c)]
            prior[j, a, b] = w[c[j % len(c)]] / (n_hyp // len(c) + (j % len(c) < n_hyp % len(c)))
    return pair, prior


def cluster_themes(world: demo.DemoWorld, item_cluster: np.ndarray) -> np.ndarray:
    """Each cluster's majority theme."""
    mix = np.zeros((int(item_cluster.max()) + 1, demo.N_THEMES))
    np.add.at(mix, (item_cluster, world.theme_of_item), 1.0)
    return mix.argmax(axis=1)


def posterior_hits(hist: list[list[int]], label: np.ndarray, tables: np.ndarray, prior: np.ndarray,
                   train_table: np.ndarray, m: int, kappa: float = POSTERIOR_KAPPA) -> np.ndarray:
    """Whether each label is in the first m clusters of the posterior predictive of its
    history (a, b): hypothesis j's row tables[j, a, b] (+ kappa moves of its back-off after
    b), weighted by prior[j, a, b] times the likelihood of train's moves from (a, b) under
    that row. The history's clusters excluded; ties by cluster id."""
    after_last = shares(tables.sum(axis=1))  # (J, n, n): moves after the last cluster
    out = np.zeros(len(label), dtype=bool)
    for i, ((a, b), y) in enumerate(zip(hist, label)):
        row = tables[:, a, b] + kappa * after_last[:, b]  # (J, n)
        row = np.maximum(row / np.maximum(row.sum(axis=1, keepdims=True), 1e-300), 1e-12)
        log_post = np.log(prior[:, a, b]) + np.log(row) @ train_table[a, b]
        post = np.exp(log_post - log_post.max())
        out[i] = in_first((post / post.sum()) @ row, a, b, y, m)
    return out


def spike_predictive(counts: np.ndarray, base: np.ndarray, prior: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(c) of a history whose moves follow base except for a share rho that goes to one
    favourite cluster s of its own, s ~ prior, inferred from the history's counts:
    (1 - rho) base + rho P(s = c | counts), with P(s | counts) proportional to prior(s)
    (1 + rho / ((1 - rho) base(s)))^counts(s). rho has one entry per setting (rows out)."""
    rho = np.asarray(rho, dtype=float)[:, None]
    log_post = np.log(prior) + counts * np.log1p(rho / ((1 - rho) * base))
    post = np.exp(log_post - log_post.max(axis=-1, keepdims=True))
    return (1 - rho) * base + rho * post / post.sum(axis=-1, keepdims=True)


def spike_parts(train_table: np.ndarray, a: int, b: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base, prior rows per w) of history (a, b) from train's moves: base = the moves after
    the last cluster, prior = w after the last + (1 - w) after the first; add-one smoothed."""
    after_last = train_table[:, b].sum(axis=0) + 1.0
    after_first = train_table[a].sum(axis=0) + 1.0
    base, first = after_last / after_last.sum(), after_first / after_first.sum()
    w = np.asarray(w, dtype=float)[:, None]
    prior = w * base + (1 - w) * first
    prior[:, [a, b]] = 1e-300  # never the favourite; log stays finite
    return base, prior


def spike_setting(train_table: np.ndarray, m: int) -> tuple[float, float]:
    """(rho, w) of SPIKE_GRID with the best leave-one-move-out recall@m on train's moves:
    each move predicted from its history's other moves. Ties: the smaller rho, then w."""
    rho = np.repeat(SPIKE_GRID["rho"], len(SPIKE_GRID["w"]))
    w = np.tile(np.asarray(SPIKE_GRID["w"], dtype=float), len(SPIKE_GRID["rho"]))
    hits = np.zeros(len(rho))
    for a, b in zip(*np.nonzero(train_table.sum(axis=2))):
        base, prior = spike_parts(train_table, a, b, w)
        for c in np.flatnonzero(train_table[a, b]):
            counts = train_table[a, b].copy()
            counts[c] -= 1
            score = spike_predictive(counts, base, prior, rho)
            score[:, [a, b]] = -np.inf
            ahead = (score > score[:, [c]]) | ((score == score[:, [c]]) & (np.arange(len(base)) < c))
            hits += (ahead.sum(axis=1) < m) * train_table[a, b, c]
    best = int(np.argmax(hits))  # first of the ties: the smaller rho, then w
    return float(rho[best]), float(w[best])


def spike_hits(hist: list[list[int]], label: np.ndarray, train_table: np.ndarray, rho: float, w: float,
               m: int) -> np.ndarray:
    """Whether each label is in the first m clusters of spike_predictive of its history, the
    history's clusters excluded; ties by cluster id."""
    out = np.zeros(len(label), dtype=bool)
    for i, ((a, b), y) in enumerate(zip(hist, label)):
        base, prior = spike_parts(train_table, a, b, [w])
        out[i] = in_first(spike_predictive(train_table[a, b], base, prior, [rho])[0], a, b, y, m)
    return out


def bootstrap(users: np.ndarray, hits: dict[str, np.ndarray], mask: np.ndarray, n_boot: int, seed: int,
              refs: tuple[str, ...] = (ORACLE,)) -> dict:
    """Recall of each policy on the masked transitions and the paired differences of
    each of refs against every other policy, 95% percentile intervals over users."""
    uid, inv = np.unique(users, return_inverse=True)
    names = list(hits)
    h = np.stack([hits[n] & mask for n in names]).astype(float)  # (policies, transitions)
    per_user = np.zeros((len(names), len(uid)))
    n_user = np.zeros(len(uid))
    np.add.at(per_user.T, inv, h.T)
    np.add.at(n_user, inv, mask.astype(float))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uid), (n_boot, len(uid)))
    num = per_user[:, draws].sum(axis=2)  # (policies, replicates)
    den = n_user[draws].sum(axis=1)
    rec = num / np.maximum(den, 1)
    point = per_user.sum(axis=1) / max(n_user.sum(), 1)
    out = {"n": int(n_user.sum()), "recall": {}, "diff": {}}
    for i, n in enumerate(names):
        lo, hi = np.percentile(rec[i], [2.5, 97.5])
        out["recall"][n] = [round(point[i], 4), round(lo, 4), round(hi, 4)]
    for ref in refs:
        o = names.index(ref)
        for i, n in enumerate(names):
            if i != o:
                lo, hi = np.percentile(rec[o] - rec[i], [2.5, 97.5])
                out["diff"][f"{ref}_minus_{n}"] = [round(point[o] - point[i], 4), round(lo, 4), round(hi, 4)]
    return out


def segments_of(seen: np.ndarray, bounds: list[int]) -> dict[str, np.ndarray]:
    """lookup_evaluation's history segments (var history_seen_bounds), all transitions first."""
    lo, hi = int(bounds[0]), int(bounds[1])
    first = "seen_0" if lo == 1 else f"seen_0_{lo - 1}"
    return {"all": np.ones(len(seen), dtype=bool), first: seen < lo, f"seen_{lo}_{hi - 1}": (seen >= lo) & (seen < hi),
            f"seen_0_{hi - 1}": seen < hi, f"seen_{hi}_plus": seen >= hi}


def judge(db: Path, seed: int, n_sim: int, sim_seed: int, n_boot: int, posterior: bool = True) -> dict:
    """The ceiling and every lookup of one demo warehouse, per history segment."""
    level, k, m = config.llm_level(), config.history_len(), SELECTION_M
    if k != 2:
        raise SystemExit(f"demo_ceiling: the ceiling is tabulated for histories of two clusters; K is {k}")
    vars_ = config.dbt_vars()
    world = demo.DemoWorld.of_seed(seed)
    events_per_user = (config.env_int("IE_DEMO_EVENTS", demo.DEFAULT_EVENTS)
                       / config.env_int("IE_DEMO_USERS", demo.DEFAULT_USERS))

    with wh.connect(db, read_only=True) as con:
        if wh.query(con, f"select count(*) as n from {config.RAW_ITEMS}")["n"][0] != world.items.height:
            raise SystemExit(f"demo_ceiling: {db} does not hold this demo world's {world.items.height} items")
        cluster_of = dict(wh.query(con, f"select item_id, cluster_id from {config.ITEM_CLUSTERS} where level = ?",
                                   [level]).iter_rows())
        split_mode = wh.query(con, f"select distinct split_mode from {config.NOVEL_TRANSITION_EXAMPLES}")["split_mode"][0]
        ev = wh.query(con, f"""
            with seen as (
                select history, sum(n_train) as n_seen from {config.SUCCESSOR_COUNTS}
                where level = ? and k = ? and context = 'history' group by history
            )
            select e.user_id, e.history, e.next_cluster_id, coalesce(s.n_seen, 0) as n_seen
            from {config.NOVEL_TRANSITION_EXAMPLES} e left join seen s on s.history = e.history
            where e.split = 'eval' and e.level = ? and e.k = ?
            order by e.user_id, e.seq_pos""", [level, k, level, k])
        lookups = wh.query(con, f"""
            select 'llm' as policy, history, next_cluster_id from {config.NOVEL_INTEREST_TRANSITIONS}
            where level = ? and k = ? and rank <= ?
            union all
            select policy, history, next_cluster_id from {config.POLICY_LOOKUPS}
            where level = ? and k = ? and rank <= ? and list_contains(?, policy)
            union all
            select policy, history, next_cluster_id from {config.COUNT_LOOKUPS}
            where level = ? and k = ? and rank <= ?""", [level, k, m, level, k, m, [*COUNT_POLICIES, ABLATION], level, k, m])
        train = wh.query(con, f"""
            select history, next_cluster_id, n_train from {config.SUCCESSOR_COUNTS}
            where level = ? and k = ? and context = 'history'""", [level, k])
        reported = wh.query(con, f"select policy, metric, value from {config.LOOKUP_EVALUATION} "
                                 "where level = ? and k = ? and split_mode = ?", [level, k, split_mode])

    item_cluster = item_clusters(world, cluster_of)
    positive = float(vars_["positive_threshold"])
    t0 = time.perf_counter()
    table = simulated_table(world, item_cluster, n_sim, events_per_user, positive, seed=sim_seed)
    sim_s = time.perf_counter() - t0

    hist = ev["history"].to_list()
    label = ev["next_cluster_id"].to_numpy()
    hits = {ORACLE: ceiling_hits(hist, label, table, m)}
    # how far the population's pair-blind back-off goes, alone and behind train's counts
    w, after_last, after_first = pair_blind(table, m)
    blind = blend(w, after_last, after_first)
    train_table = np.zeros_like(table)  # train's counts of each history
    for (a, b), c, n in train.iter_rows():
        train_table[a, b, c] = n
    counted = lambda a, b: train_table[a, b]  # noqa: E731
    hits[PAIR_BLIND] = ranked_hits(hist, label, lambda a, b: np.zeros(table.shape[0]), blind, m)
    hits[COUNTS_PAIR_BLIND] = ranked_hits(hist, label, counted, blind, m)
    # what train's own moves give that back-off (its mix chosen on those moves, in sample)
    tw, t_last, t_first = pair_blind(train_table, m)
    hits[COUNTS_TRAIN_BLIND] = ranked_hits(hist, label, counted, blend(tw, t_last, t_first), m)
    spike = spike_setting(train_table, m)
    hits[SPIKE] = spike_hits(hist, label, train_table, *spike, m)
    post_info = None
    if posterior:  # one population per hypothesis, on the ceiling's random streams
        t1 = time.perf_counter()
        pair, theme_prior = pair_hypotheses(world.succ)
        tables = np.stack([simulated_table(world.with_pairs(pj), item_cluster, n_sim, events_per_user, positive,
                                           seed=sim_seed) for pj in pair])
        th = cluster_themes(world, item_cluster)
        hits[POSTERIOR] = posterior_hits(hist, label, tables, theme_prior[:, th[:, None], th[None, :]], train_table, m)
        covered = (pair == world.pair).any(axis=0)[~np.eye(demo.N_THEMES, dtype=bool)]
        post_info = {"hypotheses": len(pair), "kappa": POSTERIOR_KAPPA, "true_pair_among_hypotheses": bool(covered.all()),
                     "seconds": round(time.perf_counter() - t1, 1)}
    for policy in ("llm", *COUNT_POLICIES, ABLATION):
        top = lookups.filter(pl.col("policy") == policy).group_by(pl.col("history").cast(pl.List(pl.Int64))).agg(
            pl.col("next_cluster_id"))
        stored = {tuple(h): set(c) for h, c in top.iter_rows()}
        hits[policy] = np.array([int(y) in stored.get(tuple(h), ()) for h, y in zip(hist, label)])
    segments = segments_of(ev["n_seen"].to_numpy(), vars_["history_seen_bounds"])
    # the recomputed hits must be lookup_evaluation's
    for policy in ("llm", *COUNT_POLICIES, ABLATION):
        for seg, mask in segments.items():
            metric = f"recall_at_{m}" + ("" if seg == "all" else f"__{seg}")
            want = reported.filter((pl.col("policy") == policy) & (pl.col("metric") == metric))["value"]
            if want.len() and abs(want[0] - hits[policy][mask].mean()) > 1e-9:
                raise SystemExit(f"demo_ceiling: {policy} {metric} is {hits[policy][mask].mean():.4f} here and "
                                 f"{want[0]:.4f} in lookup_evaluation: the lookups changed after it was built")
    users_eval = ev["user_id"].to_numpy()
    return {
        "db": str(db), "seed": seed, "split_mode": split_mode, "level": level, "k": k, "m": m,
        "eval_transitions": len(label),
        "simulated": {"users": n_sim, "seed": sim_seed, "novel_moves": int(table.sum()),
                      "histories_left": int((table.sum(axis=2) > 0).sum()), "seconds": round(sim_s, 1)},
        "pair_blind_last_weight": w,
        "train_blind_last_weight": tw,
        "posterior": post_info,
        "spike_rho_w": spike,
        "segments": {seg: bootstrap(users_eval, hits, mask, n_boot, seed=0,
                                    refs=(ORACLE, COUNTS_PAIR_BLIND, SPIKE, *([POSTERIOR] if posterior else ())))
                     for seg, mask in segments.items()},
        "checked_against_lookup_evaluation": True,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=None, help="the demo warehouse (default: DUCKDB_DATABASE's)")
    ap.add_argument("--seed", type=int, default=None, help="its IE_DEMO_SEED (default: the environment's, or 7)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="instead: the worlds bench/demo_worlds.py built, pooled")
    ap.add_argument("--split-mode", choices=config.SPLIT_MODES, default="user", help="of the --seeds worlds")
    ap.add_argument("--sim-users", type=int, default=1_000_000, help="users of the simulated population")
    ap.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated population")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--no-posterior", dest="posterior", action="store_false",
                    help="skip the posterior lookup (a population per hypothesis: 8 a world, 8-10 min)")
    args = ap.parse_args()
    if not args.seeds:
        seed = args.seed if args.seed is not None else config.env_int("IE_DEMO_SEED", demo.DEFAULT_SEED)
        print(json.dumps(judge(args.db or config.database_path(), seed, args.sim_users, args.sim_seed, args.boot,
                               args.posterior), indent=1))
        return
    worlds = {s: judge(demo_worlds.world_paths(s, args.split_mode)[0], s, args.sim_users, args.sim_seed, args.boot,
                       args.posterior) for s in args.seeds}
    pooled = {}
    for seg in next(iter(worlds.values()))["segments"]:
        for name in next(iter(worlds.values()))["segments"][seg]["diff"]:
            rows = [(*w["segments"][seg]["diff"][name], w["segments"][seg]["n"]) for w in worlds.values()]
            pooled.setdefault(seg, {})[name] = demo_worlds.pool(rows)
    print(json.dumps({"split_mode": args.split_mode, "seeds": args.seeds, "worlds": worlds, "pooled": pooled}, indent=1))


if __name__ == "__main__":
    main()
