"""The one home of the novel-interest prompt.

A prompt holds a request for one new interest that is not in the list, then the
user's K history clusters' descriptions, oldest first; the answer is one cluster
description followed by the end-of-sequence token.

The request comes first and each history cluster is its own segment, so every
history starting with the same clusters shares a token prefix: pair inference
computes that prefix's KV cache once per group (models_ml.llm.pairs). Segments are
tokenised separately and concatenated (models_ml.llm.tokens), the same way in
fine-tuning and inference, so a shared prefix is the same token ids in both.

With a chat template (instruct models) the request is the system turn, which also
replaces any long default system prompt the template would add, the history is the
user turn and the answer the assistant turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INSTRUCTION = (
    "Suggest one new interest for a user who enjoyed the interests below, oldest first. "
    "Answer with one interest that is not in the list."
)
_SENTINEL = "\u2063IE_HISTORY\u2063"


@dataclass(frozen=True)
class PromptFormat:
    """``head`` (with the instruction) + items + ``tail``; the answer is
    ``answer_prefix`` + description."""

    head: str
    tail: str
    answer_prefix: str = ""

    def segments(self, descriptions: Sequence[str]) -> list[str]:
        """One text segment per history cluster, oldest first: the first carries the
        head, the last the tail."""
        if not descriptions:
            raise ValueError("a prompt needs at least one history cluster description")
        segs = [("\n" if i else "") + "- " + clean(d) for i, d in enumerate(descriptions)]
        segs[0] = self.head + segs[0]
        segs[-1] = segs[-1] + self.tail
        return segs

    def render(self, descriptions: Sequence[str]) -> str:
        return "".join(self.segments(descriptions))

    def answer(self, description: str) -> str:
        """Answer text; the end-of-sequence token is appended as a token id."""
        return self.answer_prefix + clean(description)

    def parse_answer(self, text: str) -> str:
        """Generated text (end-of-sequence stripped) back to a description."""
        if self.answer_prefix and text.startswith(self.answer_prefix):
            text = text[len(self.answer_prefix):]
        return text.strip()


# Models without a chat template get a plain completion layout.
PLAIN_FORMAT = PromptFormat(head=INSTRUCTION + "\n", tail="\nNew interest:", answer_prefix=" ")


def clean(description: str) -> str:
    """Descriptions with whitespace collapsed (a newline would break the layout)."""
    text = " ".join(str(description).split())
    if not text:
        raise ValueError(f"empty cluster description {description!r}")
    return text


def prompt_format(tokenizer) -> PromptFormat:
    """The prompt layout for ``tokenizer``'s model."""
    if not getattr(tokenizer, "chat_template", None):
        return PLAIN_FORMAT
    attempts = (
        [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": _SENTINEL}],
        [{"role": "user", "content": INSTRUCTION + "\n" + _SENTINEL}],  # templates without a system role
    )
    for messages in attempts:
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates raise on roles they do not support
            continue
        if isinstance(text, str) and text.count(_SENTINEL) == 1:
            head, tail = text.split(_SENTINEL)
            return PromptFormat(head=head, tail=tail)
    return PLAIN_FORMAT
