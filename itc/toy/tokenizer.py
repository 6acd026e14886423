"""The embedded world's tokenizer: a byte-level BPE in Qwen2's format, nearly character-level.

Its vocabulary is the 256 byte-level symbols plus a few merges, so every character is
one token except the step delimiter ``"\\n\\n"`` and ``\\boxed``, which are single tokens
and keep steps short, and the toy task's operations (``+6``, ``-3``, ``*2``), which are
single added tokens: copying an operation from the problem is then a one-token lookup
that a 2-layer model learns in minutes (as two tokens, sign and digit, it did not). It is a ``Qwen2Tokenizer`` (the same pre-tokenizer and byte-level
decoder as Qwen2.5's), so transformers' ``AutoTokenizer`` and vLLM load it from a local
folder exactly as they load a hub Qwen2 tokenizer. (transformers forces
``Qwen2Tokenizer`` for any ``qwen2`` checkpoint, so a tokenizer of another kind would be
silently rebuilt as one on load.) A small chat template marks the roles.
"""

from __future__ import annotations

from tokenizers import AddedToken, pre_tokenizers
from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

PAD, BOS, END = "<pad>", "<bos>", "<|end|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
STEP_TAG = "<extra_0>"  # Qwen2.5-Math-PRM's step tag, reserved for PRMs on this backbone
SPECIAL_TOKENS = [PAD, BOS, END, SYSTEM, USER, ASSISTANT, STEP_TAG]
# Merges (in byte-level symbols): "\n\n" and "\boxed" become single tokens.
MERGES = [("Ċ", "Ċ"), ("\\", "b"), ("\\b", "o"), ("\\bo", "x"), ("\\box", "e"), ("\\boxe", "d")]

OPERATION_TOKENS = [f"{op}{d}" for op in "+-" for d in range(1, 10)] + ["*2", "*3"]

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerBase:
    symbols = list(SPECIAL_TOKENS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols += [a + b for a, b in MERGES]
    vocab = {tok: i for i, tok in enumerate(symbols)}
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(MERGES),
        unk_token=None,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[AddedToken(t, special=True) for t in (SYSTEM, USER, ASSISTANT, STEP_TAG)],
        model_max_length=1024,
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in OPERATION_TOKENS])
    tok.chat_template = CHAT_TEMPLATE
    return tok
