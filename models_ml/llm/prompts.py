"""The one home of the novel-interest prompt.

A prompt is an instruction asking for one new interest that is not in the list, then
the user's K history clusters' descriptions, oldest first, one per line; the answer
is one cluster description followed by the end-of-sequence token::

    Suggest one new interest for a user who enjoyed the interests listed below,
    oldest first. Answer after "+" with one interest that is not in the list.
    - sourdough, starter
    - bouldering, rope
    + jazz, archtop<eos>

Why this layout:
- The instruction comes first and each history cluster is its own segment, so all
  histories starting with the same clusters share a token prefix whose KV cache pair
  inference computes once (models_ml.llm.decoding.TokenTree). :meth:`PromptFormat.segments`
  is the one assembly of a prompt; models_ml.llm.tokens tokenises its segments
  separately and concatenates them, identically in fine-tuning and inference.
- What follows the last cluster is repeated for every history (N x (N-1) times at
  K = 2), so it is two tokens ("\\n+"). A chat template would add six
  (``<|im_end|>\\n<|im_start|>assistant\\n``) to every history and to every training
  example; the fine-tuned model learns this plain layout instead, and the zero-shot
  model is measured on the same prompt.
- The answer starts with a space: words then tokenise as they do mid-sentence
  (" drum" is one token, "drum" two), so answers are short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INSTRUCTION = (
    "Suggest one new interest for a user who enjoyed the interests listed below, oldest first. "
    'Answer after "+" with one interest that is not in the list.'
)


@dataclass(frozen=True)
class PromptFormat:
    head: str = INSTRUCTION + "\n"
    item_prefix: str = "- "
    tail: str = "\n+"
    answer_prefix: str = " "
    # collaborative evidence (optional): the history's most frequent successors among
    # train users, with their counts, as one more segment before the tail
    evidence_prefix: str = "\n= others then chose: "
    evidence_empty: str = "nothing yet"

    def item(self, description: str, first: bool, last: bool) -> str:
        """The text segment of one history cluster."""
        return ("" if first else "\n") + self.item_prefix + clean(description) + (self.tail if last else "")

    def evidence(self, successors: Sequence[tuple[str, int]]) -> str:
        """The evidence segment: 'description (count)' pairs, most frequent first."""
        listed = "; ".join(f"{clean(d)} ({int(n)})" for d, n in successors)
        return self.evidence_prefix + (listed or self.evidence_empty) + self.tail

    def segments(self, descriptions: Sequence[str], evidence: Sequence[tuple[str, int]] | None = None) -> list[str]:
        """[head, cluster 1, ..., cluster K + tail], oldest first; with ``evidence``
        (successor descriptions and counts) [head, cluster 1, ..., cluster K, evidence + tail]."""
        if not descriptions:
            raise ValueError("a prompt needs at least one history cluster description")
        k = len(descriptions)
        if evidence is None:
            return [self.head] + [self.item(d, i == 0, i == k - 1) for i, d in enumerate(descriptions)]
        return [self.head] + [self.item(d, i == 0, False) for i, d in enumerate(descriptions)] + [self.evidence(evidence)]

    def answer(self, description: str) -> str:
        """Answer text; the end-of-sequence token is appended as a token id."""
        return self.answer_prefix + clean(description)

    def parse_answer(self, text: str) -> str:
        """Generated text (end-of-sequence stripped) back to a description."""
        if self.answer_prefix and text.startswith(self.answer_prefix):
            text = text[len(self.answer_prefix):]
        return text.strip()


PROMPT = PromptFormat()


def clean(description: str) -> str:
    """Descriptions with whitespace collapsed (a newline would break the layout)."""
    text = " ".join(str(description).split())
    if not text:
        raise ValueError(f"empty cluster description {description!r}")
    return text
