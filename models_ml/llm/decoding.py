"""Constrained and unconstrained decoding over cluster descriptions.

Scores. A history's score for a cluster is its trie-constrained probability: at
every trie node with more than one allowed child (children leading only to history
clusters are not allowed) the model's next-token probabilities are renormalised
over the allowed children; a node with one allowed child costs nothing (the choice
is forced). The scores of all clusters outside the history sum to 1, so the
``score`` column is normalised over the whole candidate set and the m rows of a
history sum to at most 1.

Search. Best-first over the trie (:func:`best_first_topm`): a partial answer's
probability bounds every completion below it, so popping the most probable
frontier entry and emitting it when it is complete gives the exact top m in order,
expanding only the nodes that can still matter. Rows (histories) are searched
together; each round's expansions are one batched forward pass.

Work sharing. :class:`TokenTree` keeps one KV cache shaped as a tree: histories that
share their first clusters share the KV cache of that prompt prefix (computed once),
trie expansions feed only the tokens not cached yet, only branching trie nodes need
logits, and those logits are computed for the allowed child tokens only, not the whole
vocabulary. (:class:`RowBatch`, padded rows with per-row caches, serves fine-tuning
and greedy generation.)
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models_ml.llm.tokens import AnswerTrie, TrieNode


# ---- the search (model-agnostic) ------------------------------------------------
@dataclass(frozen=True)
class Entry:
    logp: float
    path: tuple[int, ...]  # answer tokens from the answer start to ``node``
    node: TrieNode
    cluster_id: int | None  # set when the entry is a complete answer


# score_fn(requests) -> raw logits, one array per request; a request is
# (row, path, candidate tokens): the logits of those tokens after ``path``.
ScoreFn = Callable[[list[tuple[int, tuple[int, ...], list[int]]]], list[np.ndarray]]


def settle(trie: AnswerTrie, logp: float, path: tuple[int, ...], node: TrieNode, excluded: frozenset[int]) -> Entry:
    """Follow forced choices (one allowed child) until a complete answer or a branch."""
    while node.cluster_id is None:
        allowed = trie.allowed(node, excluded)
        if len(allowed) != 1:
            break
        tok, node = allowed[0]
        path = path + (tok,)
    return Entry(logp, path, node, node.cluster_id)


def best_first_topm(
    trie: AnswerTrie, excluded: Sequence[frozenset[int]], m: int, score_fn: ScoreFn
) -> list[list[tuple[int, float]]]:
    """Exact top-``m`` clusters per row as [(cluster_id, constrained probability)],
    best first, ties broken by cluster id."""
    n_rows = len(excluded)
    heaps: list[list] = [[] for _ in range(n_rows)]
    results: list[list[tuple[int, float]]] = [[] for _ in range(n_rows)]
    tie = 0
    for row in range(n_rows):
        if trie.root.leaves <= excluded[row]:
            continue  # every cluster is in the history: nothing to suggest
        e = settle(trie, 0.0, (), trie.root, excluded[row])
        heaps[row].append((0.0, _tiebreak(e), tie, e))
        tie += 1
    while True:
        requests: list[tuple[int, Entry, list[int]]] = []
        for row in range(n_rows):
            heap = heaps[row]
            while heap and len(results[row]) < m:
                e = heapq.heappop(heap)[3]
                if e.cluster_id is not None:
                    results[row].append((e.cluster_id, math.exp(e.logp)))
                    continue
                requests.append((row, e, [t for t, _ in trie.allowed(e.node, excluded[row])]))
                break
        if not requests:
            return results
        logits = score_fn([(row, e.path, toks) for row, e, toks in requests])
        for (row, e, toks), lg in zip(requests, logits):
            logp = _log_softmax(np.asarray(lg, dtype=np.float64))
            for tok, lp in zip(toks, logp):
                child = settle(trie, e.logp + float(lp), e.path + (tok,), e.node.children[tok], excluded[row])
                heapq.heappush(heaps[row], (-child.logp, _tiebreak(child), tie, child))
                tie += 1


def _tiebreak(e: Entry) -> int:
    # Equal probabilities: complete answers by cluster id, partial ones after them.
    return e.cluster_id if e.cluster_id is not None else 1 << 40


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def constrained_logp(trie: AnswerTrie, answer: Sequence[int], excluded: frozenset[int], logits_at) -> float:
    """Reference scoring of one full answer: the sum, over its branching nodes, of the
    renormalised log-probability of the token taken. ``logits_at(i, tokens)`` gives the
    logits of ``tokens`` after the first ``i`` answer tokens."""
    node, total = trie.root, 0.0
    for i, tok in enumerate(answer):
        allowed = [t for t, _ in trie.allowed(node, excluded)]
        if tok not in allowed:
            raise ValueError(f"token {tok} at answer position {i} is not allowed by the trie")
        if len(allowed) > 1:
            lp = _log_softmax(np.asarray(logits_at(i, allowed), dtype=np.float64))
            total += float(lp[allowed.index(tok)])
        node = node.children[tok]
    return total


# ---- the model side --------------------------------------------------------------
class LM:
    """A causal LM seen as backbone (token ids -> final hidden states, with a KV
    cache) plus an output head applied only to the tokens that are asked for."""

    def __init__(self, model):
        if hasattr(model, "get_base_model"):  # a peft wrapper: LoRA layers stay active
            model = model.get_base_model()
        self.model = model
        self.backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
        head = model.get_output_embeddings()
        self.head_weight = head.weight
        self.head_bias = getattr(head, "bias", None)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.logit_scale = getattr(cfg, "logit_scale", None)
        self.device = self.head_weight.device
        self.dtype = self.head_weight.dtype
        self.pad_id = 0
        self.tokens_processed = 0  # real (unpadded) tokens run through the backbone
        # transformers 5.x names the KV cache `cache` (`past_key_values` is deprecated and
        # goes in 5.40); a backbone written for the old name still gets it
        params = inspect.signature(self.backbone.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def logits(self, hidden: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """(..., d) hidden -> logits over ``tokens`` (1-D ids) or the whole vocabulary."""
        w = self.head_weight if tokens is None else self.head_weight.index_select(0, tokens)
        out = hidden @ w.T
        if self.head_bias is not None:
            out = out + (self.head_bias if tokens is None else self.head_bias.index_select(0, tokens))
        if self.logit_scale is not None:
            out = out * self.logit_scale
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out.float()

    def run(self, inputs, attention_mask, position_ids, cache):
        """``inputs``: token ids (B, T), or hidden states (B, T, d) entering the first
        layer that runs (see :meth:`layers`)."""
        feed = {"inputs_embeds": inputs} if inputs.is_floating_point() else {"input_ids": inputs}
        out = self.backbone(
            **feed,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_arg: cache},
        )
        return out.last_hidden_state, out[self._cache_arg]

    def splittable(self) -> bool:
        """Whether :meth:`layers` can run a slice of this backbone's decoder layers (a
        ``layers`` list of blocks with a cache-indexed ``self_attn`` and a final ``norm``:
        Llama, Qwen2, Mistral, SmolLM2 ...)."""
        layers = getattr(self.backbone, "layers", None)
        return (
            isinstance(layers, torch.nn.ModuleList)
            and isinstance(getattr(self.backbone, "norm", None), torch.nn.Module)
            and all(isinstance(getattr(getattr(b, "self_attn", None), "layer_idx", None), int) for b in layers)
        )

    @contextlib.contextmanager
    def layers(self, lo: int, hi: int | None = None, final_norm: bool = True):
        """Within the block, :meth:`run` runs decoder layers ``lo:hi`` only: fed hidden
        states when ``lo > 0``, returning the hidden states that leave layer ``hi - 1``
        (normalised only with ``final_norm``). Caches then hold those layers only (their
        attention modules are renumbered from 0 for the block)."""
        if not self.splittable():
            raise TypeError(f"{type(self.backbone).__name__} does not expose decoder layers that can run alone")
        backbone = self.backbone
        full, norm = backbone.layers, backbone.norm
        part = full[lo:hi]
        saved = [b.self_attn.layer_idx for b in part]
        backbone.layers = part
        if not final_norm:
            backbone.norm = torch.nn.Identity()
        for i, b in enumerate(part):
            b.self_attn.layer_idx = i
        try:
            yield
        finally:
            for b, i in zip(part, saved):
                b.self_attn.layer_idx = i
            backbone.layers, backbone.norm = full, norm


@dataclass
class RowBatch:
    """Rows sharing one forward pass: per-row KV cache, key mask and next position."""

    cache: object  # a transformers DynamicCache with B rows
    mask: torch.Tensor  # (B, T) 1 where the cached key is a real token
    next_pos: torch.Tensor  # (B,) position id of each row's next token

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])


def new_cache(pairs):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=pairs)


def _cache_pairs(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefix_batch(lm: LM, ids: Sequence[int]) -> RowBatch:
    """One row holding the KV cache of a prompt prefix."""
    if not ids:
        raise ValueError("empty prompt prefix")
    x = torch.tensor([list(ids)], device=lm.device)
    mask = torch.ones_like(x)
    pos = torch.arange(len(ids), device=lm.device)[None]
    _, cache = lm.run(x, mask, pos, new_cache(None))
    lm.tokens_processed += len(ids)
    return RowBatch(cache, mask, torch.tensor([len(ids)], device=lm.device))


def expand(batch: RowBatch, n: int) -> RowBatch:
    """``n`` rows that all start from the single row of ``batch`` (no copy)."""
    pairs = [(k.expand(n, *k.shape[1:]), v.expand(n, *v.shape[1:])) for k, v in _cache_pairs(batch.cache)]
    return RowBatch(new_cache(pairs), batch.mask.expand(n, -1), batch.next_pos.expand(n))


def select(batch: RowBatch, rows: Sequence[int]) -> RowBatch:
    idx = torch.tensor(list(rows), device=batch.mask.device, dtype=torch.long)
    pairs = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in _cache_pairs(batch.cache)]
    return RowBatch(new_cache(pairs), batch.mask.index_select(0, idx), batch.next_pos.index_select(0, idx))


def extend(lm: LM, batch: RowBatch, tokens: Sequence[Sequence[int]]) -> tuple[RowBatch, torch.Tensor]:
    """Feed each row its own tokens (right-padded; pads are masked keys and their
    positions are never used); return the grown batch and each row's hidden state
    after its last token."""
    lengths = [len(t) for t in tokens]
    if len(tokens) != batch.size or min(lengths) < 1:
        raise ValueError("extend needs one non-empty token list per row")
    width = max(lengths)
    dev = batch.mask.device
    ids = torch.full((batch.size, width), lm.pad_id, dtype=torch.long, device=dev)
    real = torch.zeros((batch.size, width), dtype=batch.mask.dtype, device=dev)
    for i, t in enumerate(tokens):
        ids[i, : len(t)] = torch.tensor(list(t), device=dev)
        real[i, : len(t)] = 1
    mask = torch.cat([batch.mask, real], dim=1)
    pos = batch.next_pos[:, None] + torch.arange(width, device=dev)[None]
    hidden, cache = lm.run(ids, mask, pos, batch.cache)
    lm.tokens_processed += sum(lengths)
    last = torch.tensor(lengths, device=dev) - 1
    h_last = hidden[torch.arange(batch.size, device=dev), last]
    return RowBatch(cache, mask, batch.next_pos + torch.tensor(lengths, device=dev)), h_last


class TokenTree:
    """KV caches of ``n_trees`` sequences (one batch row each) whose positions form
    trees: a position attends to its ancestors only (a 4-D attention mask) and its
    position id is its depth, so every root-to-leaf path computes exactly what that
    path would compute alone.

    Shared prompt prefixes are stored once per tree, histories add only their own
    segments, and trie expansions add only the tokens past what is already cached;
    rows are padded only to the longest row of a flush, and cache rows are never
    copied. Tokens are scheduled with :meth:`add` and run by :meth:`flush` (one forward
    pass for all trees)."""

    def __init__(self, lm: LM, n_trees: int):
        self.lm = lm
        self.n = n_trees
        self.cache = None
        self.vis: list[list[np.ndarray]] = [[] for _ in range(n_trees)]  # per position: what it attends to
        self.pending: list[list[int]] = [[] for _ in range(n_trees)]
        self.n_cached = 0  # positions per row so far (padding included)
        self.hidden: torch.Tensor | None = None  # (n_trees, n_cached, d)
        self.flushes = 0

    def add(self, tree: int, parent: int | None, tokens: Sequence[int]) -> list[int]:
        """Schedule ``tokens`` as a chain below position ``parent`` of ``tree`` (None: a
        new root); returns their positions. ``parent`` may itself be pending."""
        vis, pending = self.vis[tree], self.pending[tree]
        cur = vis[parent] if parent is not None else np.empty(0, dtype=np.int64)
        out = []
        for tok in tokens:
            pos = self.n_cached + len(pending)
            cur = np.append(cur, pos)
            vis.append(cur)
            pending.append(int(tok))
            out.append(pos)
        return out

    def flush(self) -> None:
        q = max(len(p) for p in self.pending)
        if q == 0:
            return
        start, kv, dev = self.n_cached, self.n_cached + q, self.lm.device
        ids = torch.full((self.n, q), self.lm.pad_id, dtype=torch.long)
        depth = torch.zeros((self.n, q), dtype=torch.long)
        mask = torch.zeros((self.n, q, kv), dtype=torch.bool)
        mask[:, torch.arange(q), start + torch.arange(q)] = True  # padding sees itself (no empty softmax)
        for b in range(self.n):
            pend = self.pending[b]
            if not pend:
                continue
            vis = self.vis[b][len(self.vis[b]) - len(pend):]
            ids[b, : len(pend)] = torch.tensor(pend)
            depth[b, : len(pend)] = torch.tensor([len(v) - 1 for v in vis])
            rows = torch.from_numpy(np.repeat(np.arange(len(pend)), [len(v) for v in vis]))
            mask[b, rows, torch.from_numpy(np.concatenate(vis))] = True
            self.lm.tokens_processed += len(pend)
        # positions taken by padding keep the per-row coordinates aligned
        for b in range(self.n):
            for _ in range(q - len(self.pending[b])):
                self.vis[b].append(np.array([len(self.vis[b])], dtype=np.int64))
        hidden, self.cache = self.lm.run(ids.to(dev), mask[:, None].to(dev), depth.to(dev), self.cache or new_cache(None))
        self.hidden = hidden if self.hidden is None else torch.cat([self.hidden, hidden], dim=1)
        self.n_cached = kv
        self.pending = [[] for _ in range(self.n)]
        self.flushes += 1


@torch.inference_mode()
def topm_prompts(
    lm: LM,
    trie: AnswerTrie,
    prompts: Sequence[Sequence[Sequence[int]]],
    excluded: Sequence[frozenset[int]],
    m: int,
    tree_rows: int = 40,
) -> list[list[tuple[int, float]]]:
    """Top-m clusters for each prompt, given as token segments (head, cluster 1, ...,
    cluster K + tail, or an evidence segment last). Prompts sharing their head and
    first cluster go into the same tree (at most ``tree_rows`` per tree, in order, so
    longer shared prefixes stay together), where every shared prefix's KV cache is
    computed once; the trees run side by side as batch rows, and each best-first round
    is one forward pass."""
    groups: dict[tuple, list[int]] = {}
    for i, segs in enumerate(prompts):
        groups.setdefault(tuple(tuple(s) for s in segs[:2]), []).append(i)
    trees = [idx[s : s + tree_rows] for idx in groups.values() for s in range(0, len(idx), tree_rows)]
    tree = TokenTree(lm, len(trees))
    where: list[tuple[int, int]] = [(0, 0)] * len(prompts)  # prompt -> (tree, last prompt position)
    for t, members in enumerate(trees):
        seg_pos: dict[tuple, int] = {}
        for i in members:
            parent, key = None, ()
            for seg in prompts[i]:
                key = key + (tuple(seg),)
                if key not in seg_pos:
                    seg_pos[key] = tree.add(t, parent, seg)[-1]
                parent = seg_pos[key]
            where[i] = (t, parent)
    tree.flush()
    fed: list[dict[tuple[int, ...], int]] = [{(): p} for _, p in where]  # answer prefix -> position
    dev = lm.device

    def score(requests):
        targets = []
        for row, path, _ in requests:
            t, known = where[row][0], fed[row]
            cut = len(path)
            while path[:cut] not in known:
                cut -= 1
            for i, p in enumerate(tree.add(t, known[path[:cut]], path[cut:]), start=cut + 1):
                known[path[:i]] = p
            targets.append((t, known[path]))
        tree.flush()
        idx = torch.tensor(targets, device=dev)
        h = tree.hidden[idx[:, 0], idx[:, 1]]
        return [lm.logits(h[i], torch.tensor(toks, device=dev)).cpu().numpy() for i, (_, _, toks) in enumerate(requests)]

    return best_first_topm(trie, excluded, m, score)


@torch.inference_mode()
def greedy_answers(
    lm: LM, prefix_ids: Sequence[int], suffixes: Sequence[Sequence[int]], eos_id: int, max_new: int
) -> list[list[int]]:
    """Unconstrained greedy continuation of each prompt (prefix + suffix), up to
    end-of-sequence or ``max_new`` tokens; used for the match rate."""
    base = prefix_batch(lm, prefix_ids)
    rows, h = extend(lm, expand(base, len(suffixes)), suffixes)
    out: list[list[int]] = [[] for _ in suffixes]
    done = [False] * len(suffixes)
    for _ in range(max_new):
        nxt = lm.logits(h).argmax(-1).tolist()
        for i, t in enumerate(nxt):
            if not done[i]:
                out[i].append(int(t))
                done[i] = t == eos_id
        if all(done):
            break
        rows, h = extend(lm, rows, [[t] for t in nxt])
    return out


@torch.inference_mode()
def exhaustive_scores(
    lm: LM, trie: AnswerTrie, prompt: Sequence[int], excluded: frozenset[int], batch_size: int = 16
) -> dict[int, float]:
    """Reference: every candidate's constrained probability from a full forward pass
    over prompt + answer (no prefix sharing, no search). Slow; for tests and the
    benchmark's correctness check."""
    cands = [c for c in sorted(trie.answers) if c not in excluded]
    out: dict[int, float] = {}
    dev = lm.device
    for start in range(0, len(cands), batch_size):
        chunk = cands[start : start + batch_size]
        seqs = [list(prompt) + list(trie.answers[c][:-1]) for c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), lm.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, device=dev)
            mask[i, : len(s)] = 1
        pos = torch.arange(width, device=dev)[None].expand(len(seqs), -1)
        hidden, _ = lm.run(ids, mask, pos, new_cache(None))
        for i, c in enumerate(chunk):
            base = len(prompt) - 1

            def logits_at(j, toks, i=i, base=base):
                return lm.logits(hidden[i, base + j], torch.tensor(toks, device=dev)).cpu().numpy()

            out[c] = math.exp(constrained_logp(trie, trie.answers[c], excluded, logits_at))
    return out
