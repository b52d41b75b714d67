"""LoRA fine-tuning of the base LM on balanced novel transitions.

Cost on a CPU is what shapes this module:
- LoRA (peft) on the top ``adapt_layers`` decoder layers only: nothing below them
  needs gradients, so backpropagation stops there.
- The instruction head is the same for every example: its KV cache is computed once
  per step without gradients (under the current weights) and shared by the batch;
  gradients flow through the history and answer tokens.
- The loss is on the answer tokens only (description + end-of-sequence), and the
  output head runs only at those positions.
- The layers below the adapted ones are frozen, so what they give is computed once per
  training prompt and answer (:class:`Trunk`); each step runs the adapted layers only.

Every ``eval_every`` steps (and at step 0, the zero-shot model, and at the end) the
loss, the unconstrained match rate and eval-split novel-transition recall@1/@5 are
recorded (:class:`EvalPoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from models_ml.llm import prompts
from models_ml.llm import base as base_lm
from models_ml.llm.decoding import LM, RowBatch, new_cache, expand, greedy_answers, select
from models_ml.llm.evaluation import popularity_lookup, recall_at
from models_ml.llm.pairs import infer_histories
from models_ml.llm.tokens import Evidence, PromptEncoder

TRAINING_FILE = "training.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(RuntimeError):
    """A fine-tuned adapter directory is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 150
    batch_histories: int = 16  # distinct histories per step, each with all its examples
    lr: float = 2e-3
    warmup_steps: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    adapt_layers: int = 8  # top decoder layers with LoRA; 0 = all
    eval_every: int = 50
    eval_histories: int = 64  # distinct eval histories for recall during training
    eval_prompts: int = 32  # prompts for the unconstrained match rate
    top_m: int = 5
    seed: int = 42
    max_grad_norm: float = 1.0
    # run only the adapted layers each step, on the frozen layers' outputs computed once
    # (class Trunk; the same loss, 1.3-1.9x fewer seconds a step on the 2-core CPU), when
    # the run covers at least one epoch of prompts
    cache_trunk: bool = True


@dataclass
class EvalPoint:
    step: int
    loss: float | None  # mean training loss since the previous point (None at step 0)
    match_rate: float
    recall_at_1: float
    recall_at_5: float
    elapsed_s: float


@dataclass
class FinetuneResult:
    model_version: str
    adapter_dir: Path
    history: list[EvalPoint]
    baselines: dict  # popularity recall on the same eval sample
    train_seconds: float
    config: FinetuneConfig
    extra: dict = field(default_factory=dict)


# ---- data ---------------------------------------------------------------------------
# A training example: (history, collaborative evidence or None, next cluster).
Example = tuple[tuple[int, ...], "Evidence | None", int]


def examples_from(frame: pl.DataFrame) -> list[Example]:
    """Examples of a training_pairs frame; an ``evidence`` column (lists of
    [cluster_id, count]) puts each example's evidence in its prompt."""
    hist = [tuple(int(c) for c in h) for h in frame["history"].to_list()]
    nxt = [int(n) for n in frame["next_cluster_id"].to_list()]
    if "evidence" not in frame.columns:
        return [(h, None, n) for h, n in zip(hist, nxt)]
    ev = [tuple((int(c), int(k)) for c, k in e) for e in frame["evidence"].to_list()]
    return list(zip(hist, ev, nxt))


def eval_sample(eval_transitions: pl.DataFrame, n_histories: int, seed: int) -> pl.DataFrame:
    """Eval transitions whose history is among ``n_histories`` distinct histories drawn
    deterministically with probability proportional to their transitions."""
    if eval_transitions.height == 0:
        raise ValueError("the eval split has no novel transitions: recall cannot be measured")
    rng = np.random.default_rng(seed)
    order = rng.permutation(eval_transitions.height)
    chosen: dict[tuple[int, ...], None] = {}
    hist = eval_transitions["history"].to_list()
    for i in order:
        chosen.setdefault(tuple(int(c) for c in hist[i]), None)
        if len(chosen) >= n_histories:
            break
    keep = pl.Series([tuple(int(c) for c in h) in chosen for h in hist])
    return eval_transitions.filter(keep)


# ---- model ----------------------------------------------------------------------------
def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    n = model.config.get_text_config().num_hidden_layers
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return name, mod
    raise base_lm.BaseModelError("cannot find the decoder layers of the base model")


def first_adapted_layer(model, adapt_layers: int) -> int:
    """Index of the lowest decoder layer with LoRA (0: all of them)."""
    n = len(decoder_layers(model)[1])
    return 0 if adapt_layers <= 0 else max(0, n - adapt_layers)


def lora_targets(model, adapt_layers: int) -> list[str]:
    name, layers = decoder_layers(model)
    n = len(layers)
    first = first_adapted_layer(model, adapt_layers)
    return [
        f"{name}.{i}.{sub}"
        for i in range(first, n)
        for sub, mod in layers[i].named_modules()
        if isinstance(mod, torch.nn.Linear)
    ]


def base_fingerprint(base_path: Path, h) -> None:
    """Feed the base model's identity into hash ``h``: its directory name, config and
    weight-file names and sizes, not its location, so the same data gives the same
    version in any checkout (hashing the weights would cost seconds per gigabyte)."""
    base = Path(base_path)
    h.update(base.resolve().name.encode())
    cfg_file = base / "config.json"
    if cfg_file.is_file():
        h.update(cfg_file.read_bytes())
    for f in sorted(base.glob("*.safetensors")) + sorted(base.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())


def model_version(base_path: Path, level: int, k: int, train: pl.DataFrame, descriptions: dict, cfg: FinetuneConfig,
                  dtype: torch.dtype = torch.float32) -> str:
    """Content hash of everything the adapter depends on (base model, level, K, cluster
    descriptions, configuration, prompt layout, training pairs, and the training dtype
    when it is not the CPU's fp32: a bf16 GPU adapter is another model)."""
    h = hashlib.sha256()
    base_fingerprint(base_path, h)
    h.update(json.dumps([level, k, sorted(descriptions.items()), asdict(cfg), asdict(prompts.PROMPT)]).encode())
    if dtype != torch.float32:  # fp32 adds nothing, so CPU versions stay as they were
        h.update(str(dtype).encode())
    examples = examples_from(train)
    h.update(json.dumps(sorted((hist, n) for hist, _, n in examples)).encode())
    if any(e is not None for _, e, _ in examples):
        h.update(json.dumps(sorted((hist, e, n) for hist, e, n in examples)).encode())
    return "llm-" + h.hexdigest()[:12]


# ---- training --------------------------------------------------------------------------
PromptKey = tuple[tuple[int, ...], "Evidence | None"]


def group_examples(examples: Sequence[Example]) -> list[tuple[PromptKey, list[int]]]:
    """[((history, evidence), [next clusters of its examples])] in first-seen order:
    examples with the same prompt share it."""
    groups: dict[PromptKey, list[int]] = {}
    for h, e, n in examples:
        groups.setdefault((h, e), []).append(n)
    return list(groups.items())


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, dev, mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=dev)
    real = torch.zeros((len(seqs), width), dtype=mask_dtype, device=dev)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), device=dev)
        real[i, : len(s)] = 1
    return ids, real


def _pad_states(states: Sequence[torch.Tensor], mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(int(s.shape[0]) for s in states)
    x = states[0].new_zeros((len(states), width, states[0].shape[-1]))
    real = torch.zeros((len(states), width), dtype=mask_dtype, device=x.device)
    for i, s in enumerate(states):
        x[i, : s.shape[0]] = s
        real[i, : s.shape[0]] = 1
    return x, real


Group = tuple[PromptKey, list[int]]


class _TokenFeed:
    """The inputs of a training forward pass as token ids (the full model runs)."""

    def __init__(self, lm: LM, enc: PromptEncoder):
        self.lm, self.enc = lm, enc

    def head(self) -> torch.Tensor:
        return torch.tensor([list(self.enc.head_ids)], device=self.lm.device)

    def prompts(self, groups: Sequence[Group], mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [[t for seg in self.enc.history_segments(h, e) for t in seg] for (h, e), _ in groups]
        return _pad(seqs, self.lm.pad_id, self.lm.device, mask_dtype)

    def answers(self, groups: Sequence[Group], mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [list(self.enc.answer_ids(n))[:-1] for _, nexts in groups for n in nexts]
        return _pad(seqs, self.lm.pad_id, self.lm.device, mask_dtype)


@dataclass
class Forward:
    """What one training forward pass leaves: the hidden states of the head, of every
    group's prompt (one row per group) and of every example's answer tokens but the last
    (one row per example, in group order; ``owner`` is its group)."""

    head: torch.Tensor  # (1, T_head, d)
    prompts: torch.Tensor  # (G, L, d), padded
    prompt_lens: torch.Tensor  # (G,)
    answers: torch.Tensor  # (E, A, d), padded
    owner: list[int]


def forward(lm: LM, feed, groups: Sequence[Group]) -> Forward:
    """One pass over ``groups``: the head once (no gradients: it is the same for every
    example, under the current weights), the prompts on copies of its KV rows, every
    answer on a copy of its group's KV rows."""
    dev = lm.device
    with torch.no_grad():
        hx = feed.head()
        h_mask = torch.ones(hx.shape[:2], dtype=torch.long, device=dev)
        h_hidden, h_cache = lm.run(hx, h_mask, torch.arange(hx.shape[1], device=dev)[None], new_cache(None))
    rows = expand(RowBatch(h_cache, h_mask, torch.tensor([hx.shape[1]], device=dev)), len(groups))
    x, real = feed.prompts(groups, rows.mask.dtype)
    mask = torch.cat([rows.mask, real], dim=1)
    lens = real.sum(dim=1).long()
    hidden, cache = lm.run(x, mask, rows.next_pos[:, None] + torch.arange(x.shape[1], device=dev)[None], rows.cache)
    owner = [g for g, (_, nexts) in enumerate(groups) for _ in nexts]
    sub = select(RowBatch(cache, mask, rows.next_pos + lens), owner)
    a_x, a_real = feed.answers(groups, sub.mask.dtype)
    a_mask = torch.cat([sub.mask, a_real], dim=1)
    a_hidden, _ = lm.run(a_x, a_mask, sub.next_pos[:, None] + torch.arange(a_x.shape[1], device=dev)[None], sub.cache)
    lm.tokens_processed += int(hx.shape[1] + real.sum() + a_real.sum())
    return Forward(h_hidden, hidden, lens, a_hidden, owner)


def batch_loss(lm: LM, enc: PromptEncoder, groups: Sequence[Group], trunk: "Trunk | None" = None) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of every example in ``groups``.

    Examples sharing a history share its prompt: the prompts run once (one row per
    history, on the instruction's cached KV), then every answer runs on a copy of its
    history's KV rows; gradients flow through both. With ``trunk`` only the adapted
    layers run, on the hidden states the frozen ones were computed to give once."""
    dev = lm.device
    if trunk is None:
        out = forward(lm, _TokenFeed(lm, enc), groups)
    else:
        with lm.layers(trunk.first):
            out = forward(lm, trunk, groups)
    answers = [list(enc.answer_ids(n)) for _, nexts in groups for n in nexts]
    owner_t = torch.tensor(out.owner, device=dev)
    # First answer token: predicted from the history's last prompt position.
    last = out.prompts[torch.arange(len(groups), device=dev), out.prompt_lens - 1]
    first_lp = torch.log_softmax(lm.logits(last), dim=-1)
    nll = -first_lp[owner_t, torch.tensor([a[0] for a in answers], device=dev)].sum()
    # The rest: from the answer's own positions.
    r_idx = torch.tensor([i for i, a in enumerate(answers) for _ in a[1:]], device=dev)
    p_idx = torch.tensor([j for a in answers for j in range(len(a) - 1)], device=dev)
    y = torch.tensor([t for a in answers for t in a[1:]], device=dev)
    nll = nll + torch.nn.functional.cross_entropy(lm.logits(out.answers[r_idx, p_idx]), y, reduction="sum")
    return nll / (len(answers) + int(y.numel()))


def train_step(lm: LM, enc: PromptEncoder, batch: Sequence[Group], params, opt: torch.optim.Optimizer,
               cfg: "FinetuneConfig", trunk: "Trunk | None" = None, sched=None) -> float:
    """One optimiser step on ``batch`` (gradients clipped to ``cfg.max_grad_norm``); its loss."""
    loss = batch_loss(lm, enc, batch, trunk)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


class Trunk:
    """The frozen trunk of a LoRA fine-tune: the decoder layers below the first adapted
    one never change, so the hidden states entering that layer are a fixed function of
    the tokens. They are computed once for the head, every training prompt and every
    answer (:meth:`build`); each step then runs only the adapted layers on them, which
    computes the same loss as the full model (``test_trunk_cache_gives_the_full_models_loss_and_gradients``)
    at a fraction of the cost."""

    def __init__(self, first: int, head: torch.Tensor, prompts: dict, answers: dict):
        self.first = first
        self._head = head  # (T_head, d)
        self._prompts = prompts  # PromptKey -> (L, d)
        self._answers = answers  # (PromptKey, next cluster) -> (A - 1, d)

    @classmethod
    def build(cls, lm: LM, enc: PromptEncoder, groups: Sequence[Group], first: int, chunk: int = 32) -> "Trunk":
        prompts: dict = {}
        answers: dict = {}
        head = None
        feed = _TokenFeed(lm, enc)
        with torch.no_grad(), lm.layers(0, first, final_norm=False):
            for lo in range(0, len(groups), chunk):
                part = groups[lo : lo + chunk]
                out = forward(lm, feed, part)
                head = out.head[0]
                e = 0
                for g, (key, nexts) in enumerate(part):
                    prompts[key] = out.prompts[g, : int(out.prompt_lens[g])].clone()
                    for n in nexts:
                        answers[(key, n)] = out.answers[e, : len(enc.answer_ids(n)) - 1].clone()
                        e += 1
        return cls(first, head, prompts, answers)

    @property
    def n_floats(self) -> int:
        return sum(int(t.numel()) for t in (self._head, *self._prompts.values(), *self._answers.values()))

    # the feed interface of :func:`forward`
    def head(self) -> torch.Tensor:
        return self._head[None]

    def prompts(self, groups: Sequence[Group], mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return _pad_states([self._prompts[key] for key, _ in groups], mask_dtype)

    def answers(self, groups: Sequence[Group], mask_dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return _pad_states([self._answers[(key, n)] for key, nexts in groups for n in nexts], mask_dtype)


def evaluate(
    lm: LM, enc: PromptEncoder, sample: pl.DataFrame, match_histories: Sequence[tuple[int, ...]], m: int,
    evidence: Mapping[tuple[int, ...], Evidence] | None = None,
) -> dict[str, float]:
    """Unconstrained match rate on ``match_histories`` and recall@1/@5 on ``sample``
    (the search runs to depth max(m, 5)); ``evidence``: each history's prompt evidence."""
    ev = (lambda h: None) if evidence is None else (lambda h: evidence[h])
    was_training = lm.model.training
    lm.model.eval()
    try:
        outs = greedy_answers(
            lm,
            enc.head_ids,
            [[t for seg in enc.history_segments(h, ev(h)) for t in seg] for h in match_histories],
            enc.eos_id,
            enc.trie.max_len + 2,
        )
        match = sum(enc.parse(o) is not None for o in outs) / max(1, len(outs))
        hists = {tuple(int(c) for c in h) for h in sample["history"].to_list()}
        top = infer_histories(lm, enc, sorted(hists), max(m, 5), evidence=evidence)
        rec = recall_at({h: [c for c, _ in r] for h, r in top.items()}, sample, (1, 5))
    finally:
        lm.model.train(was_training)
    return {"match_rate": match, **rec}


@dataclass(frozen=True)
class LlmInputs:
    """What the LLM layer learns from and is judged on, at one level and K."""

    level: int
    k: int
    descriptions: dict[int, str]
    train_pairs: pl.DataFrame  # training_pairs of the train split's 'fit' fold (history, next_cluster_id)
    eval_transitions: pl.DataFrame  # novel_transition_examples, split = 'eval' (recall)
    train_transitions: pl.DataFrame  # novel_transition_examples, split = 'train' (popularity baseline)
    # novel_transition_examples of the train split's 'validation' fold: never trained on,
    # so weights chosen on them (fusion with the counts) are honest
    validation_transitions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"history": pl.List(pl.Int32), "next_cluster_id": pl.Int32, "user_id": pl.String}))
    # collaborative evidence of every history's prompt at inference (None: plain prompts);
    # training examples carry their own, without their user, in train_pairs.evidence
    evidence: dict[tuple[int, ...], Evidence] | None = None


@dataclass(frozen=True)
class _EvalPlan:
    """The fixed yardsticks of one fine-tuning run."""

    sample: pl.DataFrame  # eval transitions whose recall is recorded
    match_histories: list[tuple[int, ...]]  # prompts for the unconstrained match rate
    baselines: dict  # popularity recall on ``sample``


def _eval_plan(inputs: LlmInputs, cfg: FinetuneConfig, rng: np.random.Generator) -> _EvalPlan:
    sample = eval_sample(inputs.eval_transitions, cfg.eval_histories, cfg.seed)
    pool = sorted({tuple(int(c) for c in h) for h in inputs.eval_transitions["history"].to_list()})
    match_hist = [pool[i] for i in rng.permutation(len(pool))[: cfg.eval_prompts]]
    pop = popularity_lookup(inputs.train_transitions, {tuple(h) for h in sample["history"].to_list()},
                            inputs.descriptions, 5)
    baselines = {"popularity_" + key: v for key, v in recall_at(pop, sample, (1, 5)).items()}
    return _EvalPlan(sample, match_hist, baselines)


def _lora_model(base_path: Path, rt: base_lm.Runtime, cfg: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    model = base_lm.load_model(base_path, rt)
    return get_peft_model(
        model,
        LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules=lora_targets(model, cfg.adapt_layers),
            task_type="CAUSAL_LM",
        ),
    )


def _schedule(opt: torch.optim.Optimizer, cfg: FinetuneConfig) -> torch.optim.lr_scheduler.LambdaLR:
    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def _check_examples(enc: PromptEncoder, examples, inputs: LlmInputs) -> None:
    for h, _, n in examples:
        enc.check_history(h)
        if n not in inputs.descriptions:
            raise ValueError(f"training pair {list(h)} -> {n} names cluster {n}, unknown at level {inputs.level}")


def finetune(
    inputs: LlmInputs,
    cfg: FinetuneConfig,
    out_root: Path,
    base_path: Path,
    version: str | None = None,
    progress: bool = True,
    on_eval: Callable[[EvalPoint], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``base_path`` on ``inputs.train_pairs``, evaluate along the way, save the
    adapter under ``out_root/<version>`` (default version: :func:`model_version`)."""
    from tqdm.auto import tqdm

    if inputs.train_pairs.height == 0:
        raise ValueError(f"no training pairs for level {inputs.level}, k {inputs.k}: nothing to fine-tune on")
    if cfg.top_m < 1 or cfg.steps < 1 or cfg.batch_histories < 1:
        raise ValueError(f"invalid fine-tuning configuration {cfg}")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rt = base_lm.runtime()
    tok = base_lm.load_tokenizer(base_path)
    enc = PromptEncoder(tok, inputs.descriptions)
    examples = examples_from(inputs.train_pairs)
    _check_examples(enc, examples, inputs)
    version = version or model_version(base_path, inputs.level, inputs.k, inputs.train_pairs, inputs.descriptions, cfg,
                                       rt.dtype)
    reused = _reuse(out_root / version, version)
    if reused is not None:  # the same inputs were fine-tuned before: same adapter
        return reused
    rng = np.random.default_rng(cfg.seed + 1)
    plan = _eval_plan(inputs, cfg, rng)

    model = _lora_model(base_path, rt, cfg)
    lm = LM(model)
    lm.pad_id = int(tok.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = _schedule(opt, cfg)
    history: list[EvalPoint] = []

    def record(step: int, loss: float | None) -> None:
        ev = evaluate(lm, enc, plan.sample, plan.match_histories, cfg.top_m, inputs.evidence)
        point = EvalPoint(step, loss, ev["match_rate"], ev["recall_at_1"], ev["recall_at_5"],
                          time.perf_counter() - t0)
        history.append(point)
        if on_eval is not None:
            on_eval(point)

    record(0, None)  # the zero-shot model
    groups = group_examples(examples)
    trunk = None
    first = first_adapted_layer(model, cfg.adapt_layers)
    # The build costs about one forward pass of every prompt (bench/finetune_step.py: it
    # paid for itself after 2/3 of an epoch of steps): short runs go without it.
    pays = cfg.steps * cfg.batch_histories >= len(groups)
    if cfg.cache_trunk and pays and first > 0 and lm.splittable():
        t_trunk = time.perf_counter()
        trunk = Trunk.build(lm, enc, groups, first)
        trunk_info = {"first_adapted_layer": first, "floats": trunk.n_floats,
                      "build_seconds": time.perf_counter() - t_trunk}
    else:
        trunk_info = None
    n_epochs = cfg.steps * cfg.batch_histories // len(groups) + 1
    order = np.concatenate([rng.permutation(len(groups)) for _ in range(n_epochs)])
    model.train()
    losses: list[float] = []
    bar = tqdm(range(1, cfg.steps + 1), desc="LoRA fine-tuning", disable=not progress, unit="step")
    for step in bar:
        idx = order[(step - 1) * cfg.batch_histories : step * cfg.batch_histories]
        losses.append(train_step(lm, enc, [groups[i] for i in idx], params, opt, cfg, trunk, sched))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step, float(np.mean(losses)))
            losses = []
    bar.close()
    model.eval()
    train_seconds = time.perf_counter() - t0
    adapter_dir = save_adapter(
        model, tok, out_root, version,
        {
            "model_version": version,
            "base_model": str(Path(base_path).resolve()),
            "level": inputs.level,
            "k": inputs.k,
            "descriptions": {str(c): d for c, d in sorted(inputs.descriptions.items())},
            "config": asdict(cfg),
            "train_examples": len(examples),
            "eval_sample_transitions": plan.sample.height,
            "history": [asdict(p) for p in history],
            "final": asdict(history[-1]),
            "zero_shot": asdict(history[0]),
            "baselines": plan.baselines,
            "train_seconds": train_seconds,
            "trunk_cache": trunk_info,
            "device": str(rt.device),
            "dtype": str(rt.dtype),
        },
    )
    return FinetuneResult(version, adapter_dir, history, plan.baselines, train_seconds, cfg)


def _reuse(adapter_dir: Path, version: str) -> FinetuneResult | None:
    """The finished adapter of ``version`` when one is saved complete (its name hashes
    every input, so it is what training would produce again)."""
    try:
        meta = read_training(adapter_dir)
    except AdapterError:
        return None
    if meta.get("model_version") != version or "history" not in meta:
        return None
    history = [EvalPoint(**p) for p in meta["history"]]
    return FinetuneResult(version, adapter_dir, history, meta.get("baselines", {}), float(meta.get("train_seconds", 0.0)),
                          FinetuneConfig(**meta["config"]), extra={"reused": True})


# ---- adapter artifacts -------------------------------------------------------------------
def save_adapter(model, tokenizer, out_root: Path, version: str, meta: dict) -> Path:
    """Adapter + tokenizer + training JSON, written to a temporary directory and
    renamed into ``out_root/<version>`` (an existing one is replaced)."""
    out_root.mkdir(parents=True, exist_ok=True)
    target = out_root / version
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=out_root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAINING_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if target.exists():
            old = out_root / f".{version}.old{os.getpid()}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_training(adapter_dir: Path) -> dict:
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(f"adapter directory {adapter_dir} does not exist; materialize the fine-tuning asset first")
    missing = [f for f in (*ADAPTER_FILES, TRAINING_FILE) if not (adapter_dir / f).is_file()]
    if missing:
        raise AdapterError(f"adapter directory {adapter_dir} is incomplete: missing {', '.join(missing)}")
    try:
        meta = json.loads((adapter_dir / TRAINING_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{adapter_dir / TRAINING_FILE} is corrupt: {exc}") from exc
    for key in ("model_version", "base_model", "level", "k", "descriptions"):
        if key not in meta:
            raise AdapterError(f"{adapter_dir / TRAINING_FILE} lacks {key!r}")
    return meta


def load_finetuned(adapter_dir: Path, rt: base_lm.Runtime | None = None):
    """(model with the adapter merged in, tokenizer, training metadata)."""
    from peft import PeftModel

    meta = read_training(adapter_dir)
    base_path = base_lm.validate_model_dir(Path(meta["base_model"]))
    model = base_lm.load_model(base_path, rt)
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - safetensors/json errors of a damaged adapter
        raise AdapterError(f"cannot load the adapter in {adapter_dir}: {exc}") from exc
    try:
        tok = base_lm.load_tokenizer(Path(adapter_dir))
    except Exception as exc:  # noqa: BLE001
        raise AdapterError(f"cannot load the tokenizer saved in {adapter_dir}: {exc}") from exc
    return model.eval(), tok, meta
