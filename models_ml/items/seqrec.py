"""SASRec-style sequence recommender (Kang & McAuley 2018) over users' positive item
sequences (models_ml.items.sequences), with leave-last-out evaluation against a
popularity baseline.

Split (leave-last-out, per user with n distinct positives):
- test: input items[:-1], target items[-1] (users with n >= 2),
- validation: input items[:-2], target items[-2] (users with n >= 3), picks the epoch,
- training: items[:-2], so neither held-out item is ever trained on.
Serving feeds the full sequence as input to the same trained weights.

Ranking is over the full catalog; the items of the input history are masked. Ties in
score are broken by catalog index (lower first), the same order `torch.topk` slates use
for the popularity policy, so the reported rank is deterministic.

The loss is full-softmax cross entropy over the catalog (shown to beat SASRec's original
one-negative BCE; Klenitskiy & Vasilev, RecSys 2023); catalogs here are <= ~10k items.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from models_ml import plots
from models_ml.items.sequences import PAD, Catalog, UserSequences, left_pad, mask_rows, training_windows

MODEL_FILE = "model.pt"
CARD_FILE = "model_card.json"
CURVE_FILE = "training_curve.png"


@dataclass(frozen=True)
class SeqRecConfig:
    max_len: int = 50
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    max_epochs: int = 40
    patience: int = 4  # epochs without validation NDCG@10 gain before stopping
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 42
    eval_k: int = 10
    n_negatives: int = 0  # 0: full-softmax CE; > 0: sampled softmax on catalogs above 2x this
    # Intra-op threads while training (None: torch's default). 1 by default: at dim 64 the
    # matmuls are small, and on the shared 2-core machine 2 threads ran epochs 3-10x slower
    # than 1 (threads stall waiting for a core). IE_SEQREC_THREADS raises it.
    threads: int | None = 1
    # Safety net: stop after the epoch that crosses it. The demo stops early (~10 epochs,
    # under a minute); ml-latest-small (9.7k items) needs ~20 epochs to beat popularity well.
    time_budget_s: float | None = 240.0


# ---- model -------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)
        self.p_attn = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p_attn if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    """Causal self-attention over left-padded item sequences; item scores are dot products
    with the (shared) item embeddings."""

    def __init__(self, n_items: int, cfg: SeqRecConfig):
        super().__init__()
        if cfg.dim % cfg.n_heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by n_heads {cfg.n_heads}")
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item indices -> (B, L, dim) hidden states."""
        b, length = seqs.shape
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.cfg.max_len}")
        real = seqs != PAD
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.dim) + self.pos_emb(pos)[None]
        x = self.drop(x) * real[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        # Real keys at or before the query; a query always sees itself so padded rows
        # (ignored downstream) never have an all-masked softmax.
        allowed = (causal[None] & real[:, None, :]) | torch.eye(length, dtype=torch.bool, device=seqs.device)[None]
        allowed = allowed[:, None]  # broadcast over heads
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln(x)

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, n_items + 1) scores for the next item; column PAD is -inf."""
        h = self.forward(seqs)[:, -1]
        scores = h @ self.item_emb.weight.T
        scores[:, PAD] = float("-inf")
        return scores


# ---- evaluation --------------------------------------------------------------


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among the row's scores; ties go to the lower index
    (the order of a stable descending sort)."""
    t = scores.gather(1, targets[:, None])
    idx = torch.arange(scores.shape[1])[None]
    better = (scores > t) | ((scores == t) & (idx < targets[:, None]))
    return better.sum(1)


def ranking_metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    """HR@k and NDCG@k (one relevant item per user) from 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {f"hr@{k}": float("nan"), f"ndcg@{k}": float("nan")}
    hit = ranks < k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
    }


Scorer = Callable[[UserSequences, np.ndarray], torch.Tensor]


def evaluate_scorer(scorer: Scorer, inputs: UserSequences, targets: np.ndarray, k: int, chunk: int = 512) -> dict:
    """Full-catalog ranking of each user's target given its input sequence (masked)."""
    ranks = []
    for lo in range(0, len(inputs), chunk):
        rows = np.arange(lo, min(lo + chunk, len(inputs)))
        scores = scorer(inputs, rows)
        mask_rows(scores, inputs, rows)
        ranks.append(target_ranks(scores, torch.from_numpy(targets[rows])).numpy())
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    return {**ranking_metrics(ranks, k), "n_users": int(len(ranks))}


def model_scorer(model: SASRec) -> Scorer:
    def scorer(seqs: UserSequences, rows: np.ndarray) -> torch.Tensor:
        return score_sequences(model, [seqs.row(u) for u in rows])

    return scorer


def popularity_scores(train: UserSequences, n_items: int) -> torch.Tensor:
    """Positive-interaction counts per item index (PAD = -inf)."""
    counts = np.bincount(train.items, minlength=n_items + 1).astype(np.float32)
    out = torch.from_numpy(counts)
    out[PAD] = float("-inf")
    return out


def popularity_scorer(pop: torch.Tensor) -> Scorer:
    def scorer(seqs: UserSequences, rows: np.ndarray) -> torch.Tensor:
        return pop[None].expand(len(rows), -1).clone()

    return scorer


@torch.no_grad()
def score_sequences(model: SASRec, rows: Sequence[np.ndarray]) -> torch.Tensor:
    model.eval()
    return model.score(torch.from_numpy(left_pad(rows, model.cfg.max_len)))


# ---- training ----------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train: UserSequences
    valid_inputs: UserSequences
    valid_targets: np.ndarray
    test_inputs: UserSequences
    test_targets: np.ndarray


def leave_last_out(seqs: UserSequences) -> Split:
    lengths = seqs.lengths()
    test_users = np.flatnonzero(lengths >= 2)
    valid_users = np.flatnonzero(lengths >= 3)
    last = seqs.indptr[1:] - 1
    return Split(
        train=seqs.drop_last(2),
        valid_inputs=seqs.drop_last(2).take(valid_users),
        valid_targets=seqs.items[last[valid_users] - 1],
        test_inputs=seqs.drop_last(1).take(test_users),
        test_targets=seqs.items[last[test_users]],
    )


@dataclass
class TrainResult:
    model: SASRec
    catalog: Catalog
    cfg: SeqRecConfig
    model_version: str
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid metrics, seconds
    best_epoch: int = 0
    test: dict = field(default_factory=dict)  # sasrec metrics on the test split
    popularity: dict = field(default_factory=dict)  # popularity metrics on the test split
    train_seconds: float = 0.0
    n_windows: int = 0


def train(seqs: UserSequences, catalog: Catalog, cfg: SeqRecConfig = SeqRecConfig(), log: Callable[[str], None] = lambda s: None) -> TrainResult:
    """Train on the leave-last-out training split, pick the epoch by validation NDCG, and
    evaluate the chosen weights and the popularity baseline on the test split."""
    if cfg.threads is None:
        return _train(seqs, catalog, cfg, log)
    # torch's thread count is process-wide (other assets share the process): restore it.
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(seqs, catalog, cfg, log)
    finally:
        torch.set_num_threads(before)


def _train(seqs: UserSequences, catalog: Catalog, cfg: SeqRecConfig, log: Callable[[str], None]) -> TrainResult:
    split = leave_last_out(seqs)
    windows = training_windows(split.train, cfg.max_len)
    if len(windows) == 0:
        raise ValueError(
            "no training transitions: every user has fewer than 4 distinct positive items, "
            "so leave-last-out leaves nothing to train on"
        )
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SASRec(catalog.n_items, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = torch.from_numpy(windows)
    best, best_state, since_best, history = (-1.0, -math.inf), copy.deepcopy(model.state_dict()), 0, []
    t0 = time.perf_counter()
    ndcg_key = f"ndcg@{cfg.eval_k}"
    for epoch in range(1, cfg.max_epochs + 1):
        te = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        for batch in data[torch.randperm(len(data), generator=gen)].split(cfg.batch_size):
            x, y = batch[:, :-1], batch[:, 1:]
            valid = (x != PAD) & (y != PAD)
            h = model(x)[valid]
            loss = _loss(model, h, y[valid], cfg.n_negatives, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * int(valid.sum())
            n += int(valid.sum())
        row = {"epoch": epoch, "loss": total / max(n, 1)}
        if len(split.valid_inputs):
            row.update({f"valid_{k}": v for k, v in evaluate_scorer(model_scorer(model), split.valid_inputs, split.valid_targets, cfg.eval_k).items() if k != "n_users"})
        row["seconds"] = time.perf_counter() - te
        history.append(row)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        # Validation NDCG picks the epoch; equal NDCG goes to the lower training loss.
        score = (row.get(f"valid_{ndcg_key}", 0.0), -row["loss"])
        if score > best:
            best, best_state, since_best = score, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        if since_best >= cfg.patience:
            break
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            log(f"time budget {cfg.time_budget_s}s reached after epoch {epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    best_epoch = max(history, key=lambda r: (r.get(f"valid_{ndcg_key}", 0.0), -r["loss"]))["epoch"]
    test = evaluate_scorer(model_scorer(model), split.test_inputs, split.test_targets, cfg.eval_k)
    # Popularity sees everything but the test targets, like the model's test inputs do.
    pop = popularity_scores(seqs.drop_last(1), catalog.n_items)
    popular = evaluate_scorer(popularity_scorer(pop), split.test_inputs, split.test_targets, cfg.eval_k)
    version = _version(cfg, catalog, seqs)
    return TrainResult(
        model=model,
        catalog=catalog,
        cfg=cfg,
        model_version=version,
        history=history,
        best_epoch=best_epoch,
        test=test,
        popularity=popular,
        train_seconds=time.perf_counter() - t0,
        n_windows=len(windows),
    )


def _loss(model: SASRec, h: torch.Tensor, targets: torch.Tensor, n_negatives: int, gen: torch.Generator) -> torch.Tensor:
    """Cross entropy over the full catalog, or (n_negatives > 0 and a catalog more than
    twice that size) over the target plus n_negatives uniform items shared by the batch:
    uniform sampling keeps the softmax unbiased up to a constant, at a fraction of the
    cost of the output layer, which dominates training on large catalogs."""
    n = model.n_items
    if n_negatives <= 0 or n <= 2 * n_negatives:
        return F.cross_entropy(h @ model.item_emb.weight[1:].T, targets - 1)
    negatives = torch.randint(1, n + 1, (n_negatives,), generator=gen)
    pos = (h * model.item_emb(targets)).sum(-1, keepdim=True)
    neg = h @ model.item_emb(negatives).T
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))  # accidental hits
    return F.cross_entropy(torch.cat([pos, neg], dim=1), torch.zeros(len(targets), dtype=torch.long))


def _version(cfg: SeqRecConfig, catalog: Catalog, seqs: UserSequences) -> str:
    h = hashlib.sha1()
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(catalog.digest().encode())
    h.update(seqs.indptr.tobytes())
    h.update(seqs.items.tobytes())
    return f"sasrec-{h.hexdigest()[:12]}"


def evaluation_frame(result: TrainResult) -> pl.DataFrame:
    """Rows for ml.ranker_evaluation: one per (model, metric)."""
    rows = []
    for model_name, metrics in (("sasrec", result.test), ("popularity", result.popularity)):
        for metric, value in metrics.items():
            if metric == "n_users":
                continue
            rows.append((model_name, metric, float(value), int(metrics["n_users"])))
    return pl.DataFrame(
        rows,
        schema={"model": pl.String, "metric": pl.String, "value": pl.Float64, "n_users": pl.Int64},
        orient="row",
    ).with_columns(
        pl.lit("leave_last_out_full_catalog").alias("protocol"),
        pl.lit(result.model_version).alias("model_version"),
        pl.lit(result.best_epoch).cast(pl.Int64).alias("best_epoch"),
    )


# ---- persistence -------------------------------------------------------------


def save(result: TrainResult, directory: Path) -> Path:
    """Weights, config and catalog in one file (written atomically) plus a model card."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": result.model.state_dict(),
        "config": asdict(result.cfg),
        "item_ids": list(result.catalog.item_ids),
        "model_version": result.model_version,
    }
    tmp = directory / f".{MODEL_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, directory / MODEL_FILE)
    card = {
        "model_version": result.model_version,
        "architecture": "SASRec (causal self-attention, full-softmax CE)",
        "config": asdict(result.cfg),
        "n_items": result.catalog.n_items,
        "n_training_windows": result.n_windows,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "test": result.test,
        "popularity_baseline": result.popularity,
        "history": result.history,
    }
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2))
    metric = f"ndcg@{result.cfg.eval_k}"
    plots.plot_ranker_curve(result.history, directory / CURVE_FILE, metric, result.popularity.get(metric), result.best_epoch)
    return directory / MODEL_FILE


@dataclass(frozen=True)
class LoadedModel:
    model: SASRec
    catalog: Catalog
    model_version: str


def load(directory: Path) -> LoadedModel:
    path = directory / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no trained sequence recommender at {path}; materialize the ml/ranker_evaluation asset first"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    cfg = SeqRecConfig(**payload["config"])
    catalog = Catalog(tuple(payload["item_ids"]))
    model = SASRec(catalog.n_items, cfg)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return LoadedModel(model, catalog, payload["model_version"])
