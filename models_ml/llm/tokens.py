"""Cluster descriptions as tokens: prompt segments, answers and the answer trie.

Prompts are built from separately tokenised segments (models_ml.prompts): the head
(instruction), then one segment per history cluster, the last one carrying the tail
that opens the answer. Each answer is the description's tokens plus the
end-of-sequence token; the trie over all answers of a level is what constrained
decoding walks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from models_ml.llm import prompts


# Collaborative evidence of a prompt: (cluster_id, count) of the history's most frequent
# successors among train users, most frequent first (models_ml.llm.prompts).
Evidence = tuple[tuple[int, int], ...]


class ClusterSetError(ValueError):
    """The level's clusters cannot be used by the LLM layer."""


def level_descriptions(clusters: pl.DataFrame, level: int) -> dict[int, str]:
    """{cluster_id: description} of one level of ml.clusters, validated."""
    from models_ml import config

    for col in ("level", "cluster_id", "description"):
        if col not in clusters.columns:
            raise ClusterSetError(f"{config.CLUSTERS} has no column {col!r}")
    rows = clusters.filter(pl.col("level") == level).sort("cluster_id")
    if rows.height < 2:
        raise ClusterSetError(
            f"{config.CLUSTERS} level {level} has {rows.height} cluster(s); novel-interest inference needs at "
            "least 2 (a history plus a novel cluster)"
        )
    ids = rows["cluster_id"].to_list()
    if len(set(ids)) != len(ids):
        raise ClusterSetError(f"{config.CLUSTERS} level {level} repeats a cluster_id")
    out: dict[int, str] = {}
    for cid, desc in zip(ids, rows["description"].to_list()):
        if desc is None or not str(desc).strip():
            raise ClusterSetError(f"{config.CLUSTERS} level {level} cluster {cid} has an empty description")
        out[int(cid)] = prompts.clean(desc)
    seen: dict[str, int] = {}
    for cid, desc in out.items():
        if desc in seen:
            raise ClusterSetError(
                f"{config.CLUSTERS} level {level}: clusters {seen[desc]} and {cid} share the description {desc!r}"
            )
        seen[desc] = cid
    return out


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    cluster_id: int | None = None  # set on the node reached by the end-of-sequence token
    leaves: frozenset[int] = frozenset()  # every cluster below this node


class AnswerTrie:
    """Prefix tree over the answers' token ids (each ending in end-of-sequence)."""

    def __init__(self, answers: Mapping[int, Sequence[int]], eos_id: int):
        self.eos_id = eos_id
        self.root = TrieNode()
        self.answers = {int(c): tuple(int(t) for t in ids) for c, ids in answers.items()}
        for cid, ids in self.answers.items():
            if not ids or ids[-1] != eos_id or eos_id in ids[:-1]:
                raise ClusterSetError(f"answer tokens of cluster {cid} must end with (and only with) end-of-sequence")
            node = self.root
            for tok in ids:
                node = node.children.setdefault(tok, TrieNode())
            if node.cluster_id is not None:
                raise ClusterSetError(
                    f"clusters {node.cluster_id} and {cid} have the same answer tokens {list(ids)}: their "
                    "descriptions collide after tokenisation; make them distinct"
                )
            node.cluster_id = cid
        self._fill(self.root)
        self.max_len = max(len(a) for a in self.answers.values())

    def _fill(self, node: TrieNode) -> frozenset[int]:
        below = set() if node.cluster_id is None else {node.cluster_id}
        for child in node.children.values():
            below |= self._fill(child)
        node.leaves = frozenset(below)
        return node.leaves

    def allowed(self, node: TrieNode, excluded: frozenset[int]) -> list[tuple[int, TrieNode]]:
        """Children that still lead to a cluster outside ``excluded``."""
        return [(t, c) for t, c in node.children.items() if not c.leaves <= excluded]

    def walk(self, tokens: Iterable[int]) -> TrieNode:
        node = self.root
        for t in tokens:
            node = node.children[t]
        return node


class PromptEncoder:
    """Token ids of prompt segments and answers for one level's clusters."""

    def __init__(self, tokenizer, descriptions: Mapping[int, str], fmt: prompts.PromptFormat | None = None):
        self.tokenizer = tokenizer
        self.fmt = fmt or prompts.PROMPT
        self.descriptions = dict(descriptions)
        self.eos_id = int(tokenizer.eos_token_id)
        self.head_ids = self._bos() + self._encode(self.fmt.head) if self.fmt.head else self._bos()
        self._segment_cache: dict[str, list[int]] = {}
        answers = {c: self._encode(self.fmt.answer(d)) + [self.eos_id] for c, d in self.descriptions.items()}
        self.trie = AnswerTrie(answers, self.eos_id)
        self.by_description = {d: c for c, d in self.descriptions.items()}

    def _bos(self) -> list[int]:
        """A BOS token when the tokenizer adds one by itself and the head lacks it."""
        tok = self.tokenizer
        bos = tok.bos_token_id
        if bos is None:
            return []
        probe = tok("a", add_special_tokens=True).input_ids
        head = self._encode(self.fmt.head) if self.fmt.head else []
        if probe and probe[0] == bos and not (head and head[0] == bos):
            return [int(bos)]
        return []

    def _encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False).input_ids]

    def _segment_ids(self, text: str) -> list[int]:
        if text not in self._segment_cache:
            self._segment_cache[text] = self._encode(text)
        return self._segment_cache[text]

    def history_segments(self, history: Sequence[int], evidence: Evidence | None = None) -> list[list[int]]:
        """[cluster 1, ..., cluster K + tail] token ids of the prompt's segments
        (models_ml.llm.prompts.PromptFormat.segments; the head is :attr:`head_ids`); with
        ``evidence`` ((cluster_id, count) pairs) the evidence segment carries the tail."""
        self.check_history(history)
        listed = None if evidence is None else [(self.descriptions[int(c)], n) for c, n in evidence]
        segments = self.fmt.segments([self.descriptions[int(c)] for c in history], listed)
        return [self._segment_ids(s) for s in segments[1:]]

    def prompt_ids(self, history: Sequence[int], evidence: Evidence | None = None) -> list[int]:
        return self.head_ids + [t for seg in self.history_segments(history, evidence) for t in seg]

    def answer_ids(self, cluster_id: int) -> tuple[int, ...]:
        return self.trie.answers[cluster_id]

    def check_history(self, history: Sequence[int]) -> None:
        if len(history) == 0:
            raise ClusterSetError("empty history")
        unknown = [int(c) for c in history if int(c) not in self.descriptions]
        if unknown:
            raise ClusterSetError(f"history {list(history)} names unknown cluster(s) {unknown} at this level")
        if len(set(int(c) for c in history)) != len(history):
            raise ClusterSetError(f"history {list(history)} repeats a cluster; histories hold K distinct clusters")

    def parse(self, answer_ids: Sequence[int]) -> int | None:
        """The cluster an unconstrained generation names exactly, else None."""
        ids = list(answer_ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        text = self.fmt.parse_answer(self.tokenizer.decode(ids, skip_special_tokens=True))
        return self.by_description.get(text)
