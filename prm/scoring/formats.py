"""PRM input formats: how a problem and its steps become one token sequence, and where
each step's score is read.

Two kinds of head read the scores (``PRMFormat.head``):

- ``classifier``: a token-classification head with 2 labels; a step's score is
  ``softmax(logits)[1]`` at its position (Qwen2.5-Math-PRM).
- ``lm``: a causal LM; a step's score is the softmax over the logits of the bad and good
  tokens at its position, taking the good one (Math-Shepherd, RLHFlow).

Positions are found from character offsets in the rendered text (a fast tokenizer's
``offset_mapping``), so a step tag made of several tokens, or a chat template, needs no
special casing, and a tag-like string inside a problem is never mistaken for a tag.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
HEADS = ("classifier", "lm")


@dataclass
class Encoded:
    """One PRM input: token ids and, per step, the position its score is read at."""

    input_ids: list[int]
    positions: list[int]


def encode_at_anchors(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    anchors: Sequence[int],
    add_special_tokens: bool,
) -> Encoded:
    """Tokenize ``text``; each anchor (a character index) maps to the last token ending there.

    Raises ``ValueError`` when no token ends exactly at an anchor (a merge across it would
    make the score read at the wrong place).
    """
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    last_ending: dict[int, int] = {}
    for i, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start:
            last_ending[end] = i
    positions = []
    for c in anchors:
        if c + 1 not in last_ending:
            raise ValueError(
                f"no token ends at character {c} of the PRM input, where a step score is "
                f"read (a token crosses it): ...{text[max(0, c - 30) : c + 30]!r}..."
            )
        positions.append(last_ending[c + 1])
    return Encoded(ids, positions)


def resolve_token_id(tokenizer: PreTrainedTokenizerBase, text: str, token_id: int | None) -> int:
    """``token_id`` if given, else the last token of ``text`` encoded alone (as the
    reference scripts do, e.g. ``tokenizer.encode("+")[-1]``)."""
    if token_id is not None:
        return int(token_id)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"{text!r} encodes to no tokens")
    return ids[-1]


def _render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], add_generation_prompt: bool
) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this PRM format needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


class PRMFormat(ABC):
    """How steps become one input and where the scores are read."""

    name: ClassVar[str]
    head: ClassVar[str]  # one of HEADS

    @abstractmethod
    def encode(
        self, tokenizer: PreTrainedTokenizerBase, problem: str, steps: Sequence[str]
    ) -> Encoded:
        """The input for one candidate; ``positions`` has one entry per step."""

    def label_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        """(bad, good) token ids for ``lm`` heads."""
        raise NotImplementedError(f"format {self.name!r} has a classifier head")


@dataclass
class LMLabelTokens:
    """The good/bad tokens an ``lm``-head format compares (text, or an explicit id)."""

    good_token: str = "+"
    bad_token: str = "-"
    good_token_id: int | None = None
    bad_token_id: int | None = None

    def label_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        bad = resolve_token_id(tokenizer, self.bad_token, self.bad_token_id)
        good = resolve_token_id(tokenizer, self.good_token, self.good_token_id)
        if bad == good:
            raise ValueError(f"good and bad tokens are the same token (id {good})")
        return bad, good


@dataclass
class QwenPRMFormat(PRMFormat):
    """Qwen2.5-Math-PRM: chat (system, user = problem, assistant = steps each followed by the
    step tag); a 2-class head read at each tag."""

    name: ClassVar[str] = "qwen_prm"
    head: ClassVar[str] = "classifier"

    step_tag: str = "<extra_0>"
    system_prompt: str | None = QWEN_SYSTEM_PROMPT

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, problem: str, steps: Sequence[str]
    ) -> Encoded:
        content = "".join(step + self.step_tag for step in steps)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [
            {"role": "user", "content": problem},
            {"role": "assistant", "content": content},
        ]
        text = _render_chat(tokenizer, messages, add_generation_prompt=False)
        start = text.rfind(content)
        if start < 0:
            raise ValueError(
                "the chat template changed the assistant's content; cannot place step tags"
            )
        anchors, end = [], start
        for step in steps:
            end += len(step) + len(self.step_tag)
            anchors.append(end - 1)
        return encode_at_anchors(tokenizer, text, anchors, add_special_tokens=False)


@dataclass
class MathShepherdFormat(LMLabelTokens, PRMFormat):
    """Math-Shepherd: ``"{problem} Step 1: ... ки\\nStep 2: ... ки"`` into a causal LM; good vs
    bad token logits at each tag."""

    name: ClassVar[str] = "math_shepherd"
    head: ClassVar[str] = "lm"

    step_tag: str = "ки"
    # Rendered before each tag; {index} counts from 1.
    step_template: str = "Step {index}: {step} "
    step_separator: str = "\n"
    question_separator: str = " "
    add_special_tokens: bool = True  # the reference encodes with the tokenizer's BOS

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, problem: str, steps: Sequence[str]
    ) -> Encoded:
        text = problem + self.question_separator
        anchors = []
        for i, step in enumerate(steps):
            if i:
                text += self.step_separator
            text += self.step_template.format(index=i + 1, step=step) + self.step_tag
            anchors.append(len(text) - 1)
        return encode_at_anchors(tokenizer, text, anchors, self.add_special_tokens)


@dataclass
class RLHFlowFormat(LMLabelTokens, PRMFormat):
    """RLHFlow PRMs: each step is a user turn (the first prefixed by the problem) answered by
    the assistant with the good token; a step's score is read where that answer is predicted."""

    name: ClassVar[str] = "rlhflow"
    head: ClassVar[str] = "lm"

    first_step_template: str = "{problem} {step}"
    system_prompt: str | None = None

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, problem: str, steps: Sequence[str]
    ) -> Encoded:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        prefixes = []
        for i, step in enumerate(steps):
            content = (
                self.first_step_template.format(problem=problem, step=step) if i == 0 else step
            )
            messages.append({"role": "user", "content": content})
            prefixes.append(_render_chat(tokenizer, messages, add_generation_prompt=True))
            messages.append({"role": "assistant", "content": self.good_token})
        text = _render_chat(tokenizer, messages, add_generation_prompt=False)
        if not all(text.startswith(p) for p in prefixes):
            raise ValueError("the chat template does not render conversations prefix-consistently")
        # The last token of each generation prompt predicts the assistant's answer.
        return encode_at_anchors(
            tokenizer, text, [len(p) - 1 for p in prefixes], add_special_tokens=False
        )


FORMATS: dict[str, type[PRMFormat]] = {
    f.name: f for f in (QwenPRMFormat, MathShepherdFormat, RLHFlowFormat)
}


def build_format(cfg: dict[str, Any] | str) -> PRMFormat:
    """A format from its config (``{"type": "qwen_prm", ...}``) or bare name."""
    c = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    kind = c.pop("type", None)
    if kind not in FORMATS:
        raise ValueError(f"prm.format.type={kind!r} is not one of {', '.join(FORMATS)}")
    return FORMATS[kind](**c)
