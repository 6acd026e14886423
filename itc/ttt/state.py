"""Recurrent state of a TTT model: `TTTState` (one block) and `TTTCache` (all blocks).

Every tensor of a state has the batch on dim 0, so batching is plain tensor indexing: select rows
(`index_select`), fork a prefix into n continuations (`repeat_interleave`), or stack states of
different sequences (`cat`). The size of a state does not depend on how many tokens it has seen.

Per block the tensors are (B = batch, H = heads, b = mini-batch size):
    ``n``            (B,)            real tokens seen (padding is never counted); ``n % b`` tokens
                                     of the open mini-batch are buffered
    ``W{l}``, ``b{l}`` (B, H, ...)   inner-model weights at the start of the open mini-batch
    ``a{l}``, ``A{l}`` (B, H, b, ·)  buffered inputs of inner layer l and their ``lr_j * G_j``
    ``conv_pre``, ``conv_qk`` (B, kernel - 1, hidden)  last inputs of the Mamba backbone's convs
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch


class TTTState:
    """State of one TTT block for a batch of sequences: a dict of batch-first tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = dict(tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.tensors[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    @property
    def batch_size(self) -> int:
        return self.tensors["n"].shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def _map(self, fn) -> TTTState:
        return TTTState({k: fn(v) for k, v in self.tensors.items()})

    def clone(self) -> TTTState:
        return self._map(lambda t: t.clone())

    def detach(self) -> TTTState:
        return self._map(lambda t: t.detach())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TTTState:
        # Only floating tensors change dtype; the token counter stays an integer.
        return TTTState(
            {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                for k, v in self.tensors.items()
            }
        )

    def index_select(self, index: torch.Tensor) -> TTTState:
        return self._map(lambda t: t.index_select(0, index.to(t.device)))

    def repeat_interleave(self, repeats: int) -> TTTState:
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    @classmethod
    def cat(cls, states: Sequence[TTTState]) -> TTTState:
        keys = states[0].tensors.keys()
        return cls({k: torch.cat([s.tensors[k] for s in states], dim=0) for k in keys})


class TTTCache:
    """Recurrent cache of `TTTForCausalLM`, passed as ``past_key_values``.

    Holds one `TTTState` per block and is updated in place by each forward pass. It is created
    empty (``TTTCache()``) and filled on the first forward, so in ``generate()`` it is built after
    the inputs are expanded for ``num_return_sequences``. Memory is constant in the sequence length.

    The in-place methods ``reorder_cache``, ``batch_select_indices`` and ``batch_repeat_interleave``
    follow transformers' cache API; ``copy``, ``index_select``, ``repeat_interleave``, ``cat`` and
    ``[i]`` return new caches. To sample n continuations of a prefix, feed all but the prompt's last
    token into a cache, then
    ``generate(prompt, past_key_values=cache.copy(), num_return_sequences=n)``
    (the cache is repeated to the expanded batch on the first forward), or fork it by hand with
    ``cache.repeat_interleave(n)``.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, layers: Iterable[TTTState] | None = None, seen_tokens: int = 0):
        self.layers: list[TTTState] = list(layers) if layers is not None else []
        # Input columns consumed (padding included): what `generate` needs to slice new inputs.
        self.seen_tokens = seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[TTTState]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice | torch.Tensor) -> TTTCache:
        """Sub-batch of sequences (the batch dim is kept)."""
        if isinstance(index, int):
            index = torch.tensor([index % self.batch_size])
        elif isinstance(index, slice):
            index = torch.arange(self.batch_size)[index]
        return self.index_select(index)

    @property
    def is_initialized(self) -> bool:
        return bool(self.layers)

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size if self.layers else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def num_tokens(self) -> torch.Tensor:
        """Real (unpadded) tokens seen per sequence, shape (B,)."""
        return self.layers[0]["n"].clone()

    def nbytes(self) -> int:
        """Total bytes of the cache's tensors."""
        return sum(s.nbytes() for s in self.layers)

    def _new(self, layers: Iterable[TTTState]) -> TTTCache:
        return TTTCache(layers, self.seen_tokens)

    def copy(self) -> TTTCache:
        return self._new(s.clone() for s in self.layers)

    def detach(self) -> TTTCache:
        return self._new(s.detach() for s in self.layers)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TTTCache:
        return self._new(s.to(device, dtype) for s in self.layers)

    def index_select(self, index: torch.Tensor) -> TTTCache:
        return self._new(s.index_select(index) for s in self.layers)

    def repeat_interleave(self, repeats: int) -> TTTCache:
        return self._new(s.repeat_interleave(repeats) for s in self.layers)

    @classmethod
    def cat(cls, caches: Sequence[TTTCache]) -> TTTCache:
        layers = [TTTState.cat([c.layers[i] for c in caches]) for i in range(len(caches[0].layers))]
        return cls(layers, max(c.seen_tokens for c in caches))

    # In-place API used by transformers' GenerationMixin (beam search, expansion).
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.layers = [s.index_select(beam_idx) for s in self.layers]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.layers = [s.index_select(indices) for s in self.layers]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.layers = [s.repeat_interleave(repeats) for s in self.layers]

    def __repr__(self) -> str:
        return (
            f"TTTCache(layers={len(self.layers)}, batch={self.batch_size}, "
            f"seen_tokens={self.seen_tokens})"
        )
