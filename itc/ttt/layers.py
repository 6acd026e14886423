"""TTT layers (Sun et al., 2024, arXiv 2407.04620): TTT-Linear and TTT-MLP in plain PyTorch.

Per head (size d) the hidden state is an inner model f(x) = x + LN(g(x)), with g = x W + b
(Linear) or a two-layer GELU MLP of hidden size 4d (MLP). Each token takes one gradient step of
l_j = 1/2 ||LN(g(k_j)) - (v_j - k_j)||^2, all gradients of a mini-batch of b tokens being taken at
the mini-batch's starting weights W_0, with learned inner learning rates lr_j and token
coefficients τ_i.

The inner model is written generically as L linear layers (1 or 2) with GELU in between; for inner
layer l, a_{l,j} is its input on token j's key path at W_0 and A_{l,j} = lr_j · ∂l_j/∂(its output).
Three forms compute the same outputs:

* dual (`_dual`): a whole mini-batch at once,
  z̄_i = ā_i W_0 + b_0 - τ_i Σ_{j≤i} (ā_i·a_j + 1) A_j, then W_b = W_0 - τ_b Σ_j a_j^T A_j;
* primal (`_primal`, reference): token by token with W_i = W_0 - τ_i Σ_{j≤i} a_j^T A_j materialised;
* one-token decode (`_step`): one row of the dual form against the buffered (a_j, A_j) of the open
  mini-batch; W, b are committed when the mini-batch closes (no dW is kept).

Because the open mini-batch is buffered, a forward pass can stop and resume at any position.
Padding never enters the state: callers pass the number of real tokens per sequence (`lengths`,
real tokens first), and only those update W, b, the buffer and the position counter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from itc.ttt.configuration import TTTConfig
from itc.ttt.state import TTTState

LN_EPS = 1e-6
_GELU_C = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------- inner-model maths


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """Derivative of the tanh-approximate GELU."""
    t = torch.tanh(_GELU_C * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x)


def inner_layer_norm(
    z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = LN_EPS
) -> torch.Tensor:
    """LayerNorm over the last dim with per-head (broadcast) scale and shift."""
    return torch.addcmul(bias, weight, F.layer_norm(z, (z.shape[-1],), eps=eps))


def inner_loss_grad(
    z: torch.Tensor,
    bias_minus_target: torch.Tensor,
    weight: torch.Tensor,
    scaled_weight: torch.Tensor | None = None,
    eps: float = LN_EPS,
) -> torch.Tensor:
    """∂/∂z of 1/2 ||LN(z) - target||^2 row by row, times the row scale folded into
    ``scaled_weight`` (``weight * lr``; plain ``weight`` gives the gradient itself).

    Takes ``bias - target`` (LN's shift minus the target) so the residual is one fused op, and uses
    ATen's LayerNorm backward kernel (it has a double-backward, so training differentiates it).
    """
    d = z.shape[-1]
    zh, mean, rstd = torch.native_layer_norm(z, (d,), None, None, eps)
    scale = weight if scaled_weight is None else scaled_weight
    g = torch.addcmul(bias_minus_target, weight, zh).mul_(scale)  # scale · ∂loss/∂LN(z)
    mask = [True, False, False]
    return torch.ops.aten.native_layer_norm_backward(g, z, (d,), mean, rstd, None, None, mask)[0]


# The functions below work on 3-D tensors whose first dim is batch × heads (bmm-friendly):
# rows (BH, m, ·), weights W (BH, in, out), biases b (BH, 1, out).


def key_pass(
    k: torch.Tensor,
    bias_minus_target: torch.Tensor,
    ln_w_lr: torch.Tensor,
    Ws: list[torch.Tensor],
    bs: list[torch.Tensor],
    ln_w: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Keys through the inner model at (Ws, bs), then back-propagate the reconstruction loss.

    Returns the inputs a_l of every inner layer and A_l = lr ⊙ G_l, G_l the gradient w.r.t. its
    output. lr scales rows, so it enters once, folded into ``ln_w_lr = ln_w * lr``, and
    back-propagates linearly.
    """
    acts, pre = [k], []
    x = k
    for i, (W, b) in enumerate(zip(Ws, bs)):
        z = torch.baddbmm(b, x, W)
        pre.append(z)
        if i < len(Ws) - 1:
            x = gelu(z)
            acts.append(x)
    A = inner_loss_grad(pre[-1], bias_minus_target, ln_w, ln_w_lr)
    As = [A]
    for i in range(len(Ws) - 2, -1, -1):
        A = torch.bmm(A, Ws[i + 1].transpose(1, 2)) * gelu_grad(pre[i])
        As.insert(0, A)
    return acts, As


def query_pass(
    q: torch.Tensor,
    acts: list[torch.Tensor],
    As: list[torch.Tensor],
    Ws: list[torch.Tensor],
    bs: list[torch.Tensor],
    tau: torch.Tensor,
    mask: torch.Tensor,
    first_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dual-form rows z̄_i = ā_i W + b - τ_i Σ_j mask_ij (ā_i·a_j + 1) A_j, inner layer by layer.

    ``mask`` is tril for a mini-batch, or "j ≤ position" for one decoded row against the buffer.
    ``first_scores`` optionally gives the first layer's τ_i mask_ij (q_i·k_j + 1), precomputed.
    """
    x = q
    for i, (W, b) in enumerate(zip(Ws, bs)):
        if i == 0 and first_scores is not None:
            s = first_scores
        else:
            s = (torch.bmm(x, acts[i].transpose(1, 2)) + 1).masked_fill(~mask, 0) * tau
        z = torch.baddbmm(torch.baddbmm(b, x, W), s, As[i], alpha=-1)
        if i < len(Ws) - 1:
            x = gelu(z)
    return z


def commit(
    Ws: list[torch.Tensor],
    bs: list[torch.Tensor],
    acts: list[torch.Tensor],
    As: list[torch.Tensor],
    neg_tau_last: torch.Tensor | float,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights at the end of a full mini-batch: W - τ_b Σ_j a_j^T A_j, b - τ_b Σ_j A_j.

    A float ``-τ_b`` (no autograd needed) lets the scaling fuse into the update kernels.
    """
    if isinstance(neg_tau_last, float):
        new_W = [
            torch.baddbmm(W, a.transpose(1, 2), A, alpha=neg_tau_last)
            for W, a, A in zip(Ws, acts, As)
        ]
        new_b = [torch.add(b, A.sum(1, keepdim=True), alpha=neg_tau_last) for b, A in zip(bs, As)]
        return new_W, new_b
    scaled = [A * neg_tau_last for A in As]
    new_W = [torch.baddbmm(W, a.transpose(1, 2), A) for W, a, A in zip(Ws, acts, scaled)]
    new_b = [b + A.sum(1, keepdim=True) for b, A in zip(bs, scaled)]
    return new_W, new_b


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin, where rotate_half(x)·sin = roll(x, d/2)·sin_signed."""
    return (x * cos).addcmul_(x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


# ----------------------------------------------------------------------------- small modules


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def conv_extend(
    x: torch.Tensor, conv_state: torch.Tensor | None, lengths: torch.Tensor | None, kernel: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend the previous ``kernel - 1`` real inputs; return (extended input, next conv state)."""
    B, R, C = x.shape
    if conv_state is None:
        conv_state = x.new_zeros(B, kernel - 1, C)
    ext = torch.cat([conv_state, x], dim=1)
    if lengths is None:
        new_state = ext[:, R:]
    else:  # the last kernel-1 real inputs of each sequence
        idx = lengths[:, None] + torch.arange(kernel - 1, device=x.device)
        new_state = ext.gather(1, idx[..., None].expand(-1, -1, C))
    return ext, new_state


def causal_conv(ext: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise causal conv of an input extended by `conv_extend` (B, K-1+R, C) -> (B, R, C)."""
    y = F.conv1d(ext.transpose(1, 2), conv.weight, conv.bias, groups=conv.weight.shape[0])
    return y.transpose(1, 2)


# ----------------------------------------------------------------------------- TTT layers


class TTTLayer(nn.Module):
    """A TTT sequence-modelling layer (multi-head); subclasses fix the inner model."""

    def inner_dims(self, head_dim: int) -> list[int]:
        raise NotImplementedError

    def __init__(self, config: TTTConfig, layer_idx: int = 0):
        super().__init__()
        D, H = config.hidden_size, config.num_attention_heads
        self.layer_idx = layer_idx
        self.num_heads, self.head_dim = H, D // H
        self.mini_batch_size = config.mini_batch_size
        self.eta_base = float(config.ttt_base_lr)
        self.rope_theta = float(config.rope_theta)
        self.share_qk, self.use_gate = config.share_qk, bool(config.use_gate)
        self.conv_kernel = config.conv_kernel
        if self.share_qk:
            self.qk_proj = nn.Linear(D, D, bias=False)
            self.conv_q = nn.Conv1d(D, D, config.conv_kernel, groups=D, bias=True)
            self.conv_k = nn.Conv1d(D, D, config.conv_kernel, groups=D, bias=True)
        else:
            self.q_proj = nn.Linear(D, D, bias=False)
            self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)
        self.lr_proj = nn.Linear(D, H)  # θ_lr and β of lr_j = η_base σ(θ_lr·x_j + β) / d
        self.token_idx_offset = nn.Parameter(torch.zeros(config.mini_batch_size))  # τ'
        self.dims = self.inner_dims(self.head_dim)
        self.num_inner = len(self.dims) - 1
        for i in range(self.num_inner):
            setattr(self, f"W{i + 1}", nn.Parameter(torch.empty(H, self.dims[i], self.dims[i + 1])))
            setattr(self, f"b{i + 1}", nn.Parameter(torch.zeros(H, 1, self.dims[i + 1])))
        self.ttt_norm_weight = nn.Parameter(torch.ones(H, self.head_dim))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(H, self.head_dim))
        self.post_norm = nn.LayerNorm(D, eps=LN_EPS)
        if self.use_gate:
            self.g_proj = nn.Linear(D, D, bias=False)
        self.reset_inner_parameters(config.initializer_range)

    def reset_inner_parameters(self, std: float = 0.02) -> None:
        with torch.no_grad():
            for i in range(self.num_inner):
                getattr(self, f"W{i + 1}").normal_(0.0, std)
                getattr(self, f"b{i + 1}").zero_()
            self.ttt_norm_weight.fill_(1.0)
            self.ttt_norm_bias.zero_()
            self.token_idx_offset.zero_()

    # -- helpers

    def inner_params(self) -> list[torch.Tensor]:
        return [getattr(self, f"{p}{i + 1}") for p in "Wb" for i in range(self.num_inner)]

    def _weights(
        self, batch: int, state: TTTState | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Inner weights as (B·H, in, out) and biases as (B·H, 1, out)."""
        L = range(1, self.num_inner + 1)
        if state is not None:
            Ws, bs = [state[f"W{i}"] for i in L], [state[f"b{i}"] for i in L]
        else:
            Ws = [getattr(self, f"W{i}").expand(batch, -1, -1, -1) for i in L]
            bs = [getattr(self, f"b{i}").expand(batch, -1, -1, -1) for i in L]
        return [W.reshape(-1, *W.shape[2:]) for W in Ws], [b.reshape(-1, *b.shape[2:]) for b in bs]

    def _store_weights(
        self, state: TTTState, Ws: list[torch.Tensor], bs: list[torch.Tensor]
    ) -> None:
        B, H = state["n"].shape[0], self.num_heads
        for i, (W, b) in enumerate(zip(Ws, bs), start=1):
            state[f"W{i}"], state[f"b{i}"] = W.view(B, H, *W.shape[1:]), b.view(B, H, *b.shape[1:])

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Fresh state tensors of this layer for ``batch`` sequences."""
        ref = self.W1
        H, b = self.num_heads, self.mini_batch_size
        out: dict[str, torch.Tensor] = {
            "n": torch.zeros(batch, dtype=torch.long, device=ref.device)
        }
        for i in range(self.num_inner):
            out[f"W{i + 1}"] = getattr(self, f"W{i + 1}").detach().expand(batch, -1, -1, -1).clone()
            out[f"b{i + 1}"] = getattr(self, f"b{i + 1}").detach().expand(batch, -1, -1, -1).clone()
            out[f"a{i + 1}"] = ref.new_zeros(batch, H, b, self.dims[i])
            out[f"A{i + 1}"] = ref.new_zeros(batch, H, b, self.dims[i + 1])
        if self.share_qk:
            out["conv_qk"] = ref.new_zeros(
                batch, self.conv_kernel - 1, self.num_heads * self.head_dim
            )
        return out

    def _tau(self, dtype: torch.dtype) -> torch.Tensor:
        """τ_i = max(0, 1/i + τ'_i), i = 1..b."""
        i = torch.arange(
            1, self.mini_batch_size + 1, device=self.token_idx_offset.device, dtype=dtype
        )
        return torch.clamp(1.0 / i + self.token_idx_offset.to(dtype), min=0.0)

    def _rope(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin tables (b, d) for positions 0..b-1 (positions are taken mod b)."""
        d = self.head_dim
        inv = 1.0 / self.rope_theta ** (
            torch.arange(0, d, 2, dtype=torch.float64, device=device) / d
        )
        ang = torch.arange(self.mini_batch_size, dtype=torch.float64, device=device)[:, None] * inv
        cos, sin = torch.cat([ang, ang], dim=-1).cos(), ang.sin()
        return cos.to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)

    def _ln(self, z: torch.Tensor) -> torch.Tensor:
        """The inner LayerNorm on (B, H, ·, d)."""
        return inner_layer_norm(z, self.ttt_norm_weight[:, None], self.ttt_norm_bias[:, None])

    def _ln_params(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inner LayerNorm scale and shift as (B·H, 1, d)."""
        return self.ttt_norm_weight.repeat(batch, 1)[:, None], self.ttt_norm_bias.repeat(batch, 1)[
            :, None
        ]

    # -- forward

    def forward(
        self,
        x: torch.Tensor,
        state: TTTState | None = None,
        lengths: torch.Tensor | None = None,
        mode: str = "dual",
    ) -> torch.Tensor:
        """x: (B, R, D) with each sequence's real tokens first (``lengths`` of them, all if None).

        With a ``state`` the layer continues from it and updates it in place. ``mode="primal"`` runs
        the token-by-token reference form (no state, no padding).
        """
        B, R, D = x.shape
        H, d = self.num_heads, self.head_dim
        v = self.v_proj(x)
        lr = self.eta_base * torch.sigmoid(self.lr_proj(x)) / d  # (B, R, H)
        if self.share_qk:
            xqk = self.qk_proj(x)
            ext, conv_state = conv_extend(
                xqk, state["conv_qk"] if state is not None else None, lengths, self.conv_kernel
            )
            q, k = causal_conv(ext, self.conv_q), causal_conv(ext, self.conv_k)
            if state is not None:
                state["conv_qk"] = conv_state
        else:
            q, k = self.q_proj(x), self.k_proj(x)
        q, k, v = (t.view(B, R, H, d).transpose(1, 2) for t in (q, k, v))
        lr = lr.transpose(1, 2)  # (B, H, R)

        if mode == "primal":
            if state is not None or lengths is not None:
                raise ValueError("the primal form is a reference: no state, no padding")
            z = self._primal(q, k, v, lr)
        elif mode != "dual":
            raise ValueError(f"mode must be 'dual' or 'primal', got {mode!r}")
        elif state is not None and R == 1:
            z = self._step(q, k, v, lr, state, lengths)
        else:
            z = self._dual(q, k, v, lr, state, lengths)

        out = self.post_norm(z.transpose(1, 2).reshape(B, R, D))
        if self.use_gate:
            out = gelu(self.g_proj(x)) * out
        return self.o_proj(out)

    def _dual(
        self, q, k, v, lr, state: TTTState | None, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """Mini-batch dual form over a chunk, continuing from ``state`` (maybe mid-mini-batch)."""
        B, H, R, d = q.shape
        b, dev = self.mini_batch_size, q.device
        r = lengths if lengths is not None else torch.full((B,), R, device=dev, dtype=torch.long)
        c = state["n"] % b if state is not None else torch.zeros(B, device=dev, dtype=torch.long)
        shifted = bool((c > 0).any())
        end = c + r  # slot one past each sequence's last token
        # Lay tokens out in slots u = c + t, so every sequence's mini-batches start at multiples
        # of b; slots < c are the open mini-batch's buffered tokens, taken from the state.
        U = max(b, -(-int(end.max()) // b) * b)
        u = torch.arange(U, device=dev)
        if shifted:
            t = u[None] - c[:, None]
            valid = (t >= 0) & (t < r[:, None])
            tc = t.clamp(0, max(R - 1, 0))[:, None, :]
            q, k, v = (x.gather(2, tc[..., None].expand(B, H, U, d)) for x in (q, k, v))
            lr = lr.gather(2, tc.expand(B, H, U))
        else:
            valid = u[None] < r[:, None]
            if U > R:
                q, k, v = (F.pad(x, (0, 0, 0, U - R)) for x in (q, k, v))
                lr = F.pad(lr, (0, U - R))
        if shifted or lengths is not None:  # zero the slots that hold no real token
            vm = valid[:, None, :, None]
            q, k, v = (torch.where(vm, x, 0.0) for x in (q, k, v))
            lr = torch.where(valid[:, None, :], lr, 0.0)
        cos, sin = self._rope(q.dtype, dev)
        cos, sin = cos.repeat(U // b, 1), sin.repeat(U // b, 1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        N, BH = U // b, B * H
        ln_w, ln_b = self._ln_params(B)
        # Mini-batch-major (N, B·H, b, ·) so that each step of the loop reads contiguous blocks.
        Q, K = (x.reshape(BH, N, b, d).transpose(0, 1).contiguous() for x in (q, k))
        # LN shift minus the reconstruction target v - k
        BT = ln_b - (v - k).reshape(BH, N, b, d).transpose(0, 1)
        WLR = ln_w * lr.reshape(BH, N, b, 1).transpose(0, 1)  # (N, B·H, b, d)
        tau = self._tau(q.dtype)
        tau_rows = tau[:, None]
        neg_tau_last = -tau[-1] if tau.requires_grad else -float(tau[-1])
        tril = torch.ones(b, b, dtype=torch.bool, device=dev).tril()
        # The first inner layer's scores depend on q, k only: one product for all mini-batches.
        scores = (Q @ K.transpose(-1, -2) + 1).masked_fill(~tril, 0) * tau_rows
        Ws, bs = self._weights(B, state)
        L = range(1, self.num_inner + 1)
        if shifted:
            bufmask = torch.arange(b, device=dev)[None] < c[:, None]
            bufmask = bufmask.repeat_interleave(H, 0)[..., None]  # (B·H, b, 1)
        open_mb = (end // b).tolist()  # each sequence's open (unfinished) mini-batch
        wanted = set(open_mb) if state is not None else set()
        kept: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        min_end, max_end = int(end.min()), int(end.max())
        zs = []
        for m, (Km, Qm, BTm, WLRm, first) in enumerate(zip(K, Q, BT, WLR, scores)):
            acts, As = key_pass(Km, BTm, WLRm, Ws, bs, ln_w)
            if shifted and m == 0:  # buffered slots: their inputs and lr·G come from the state
                acts = [
                    torch.where(bufmask, state[f"a{i}"].flatten(0, 1), a) for i, a in zip(L, acts)
                ]
                As = [torch.where(bufmask, state[f"A{i}"].flatten(0, 1), a) for i, a in zip(L, As)]
                first = None
            zs.append(query_pass(Qm, acts, As, Ws, bs, tau_rows, tril, first))
            if m in wanted:
                kept[m] = (acts, As)
            if (m + 1) * b <= max_end:  # the mini-batch is full for some sequences: commit there
                new_W, new_b = commit(Ws, bs, acts, As, neg_tau_last)
                if (m + 1) * b <= min_end:
                    Ws, bs = new_W, new_b
                else:
                    f = ((m + 1) * b <= end).repeat_interleave(H)[:, None, None]
                    Ws = [torch.where(f, n, o) for n, o in zip(new_W, Ws)]
                    bs = [torch.where(f, n, o) for n, o in zip(new_b, bs)]
        z = self._ln(torch.stack(zs, dim=1).view(B, H, U, d)).add_(q)  # q + LN(z̄)
        if shifted:
            idx = (c[:, None] + torch.arange(R, device=dev)[None]).clamp(max=U - 1)
            z = z.gather(2, idx[:, None, :, None].expand(B, H, R, d))
        else:
            z = z[:, :, :R]

        if state is not None:
            state["n"] = state["n"] + r
            self._store_weights(state, Ws, bs)
            for i in L:
                for name, j in ((f"a{i}", 0), (f"A{i}", 1)):
                    rows = [
                        kept[o][j][i - 1].view(B, H, b, -1)[s]
                        if o in kept
                        else torch.zeros_like(state[name][s])
                        for s, o in enumerate(open_mb)
                    ]
                    state[name] = torch.stack(rows)
        return z

    def _step(self, q, k, v, lr, state: TTTState, lengths: torch.Tensor | None) -> torch.Tensor:
        """One token per sequence: a row of the dual form against the buffered mini-batch."""
        B, H, _, d = q.shape
        b, dev = self.mini_batch_size, q.device
        c = state["n"] % b
        valid = lengths > 0 if lengths is not None else torch.ones(B, dtype=torch.bool, device=dev)
        cos, sin = self._rope(q.dtype, dev)
        cos, sin = cos[c][:, None, None], sin[c][:, None, None]
        q = apply_rope(q, cos, sin).view(B * H, 1, d)
        k = apply_rope(k, cos, sin).view(B * H, 1, d)
        ln_w, ln_b = self._ln_params(B)
        Ws, bs = self._weights(B, state)
        bmt, w_lr = ln_b - (v.view(B * H, 1, d) - k), ln_w * lr.reshape(B * H, 1, 1)
        acts, As = key_pass(k, bmt, w_lr, Ws, bs, ln_w)
        ar = torch.arange(b, device=dev)
        slot = ((ar[None] == c[:, None]) & valid[:, None]).repeat_interleave(H, 0)[..., None]
        L = range(1, self.num_inner + 1)
        buf_a = [torch.where(slot, a, state[f"a{i}"].flatten(0, 1)) for i, a in zip(L, acts)]
        buf_A = [torch.where(slot, A, state[f"A{i}"].flatten(0, 1)) for i, A in zip(L, As)]
        mask = (ar[None] <= c[:, None]).repeat_interleave(H, 0)[:, None, :]
        tau = self._tau(q.dtype)
        zbar = query_pass(q, buf_a, buf_A, Ws, bs, tau[c].repeat_interleave(H)[:, None, None], mask)
        z = q.view(B, H, 1, d) + self._ln(zbar.view(B, H, 1, d))

        close = valid & (c == b - 1)
        if bool(close.any()):
            new_W, new_b = commit(
                Ws, bs, buf_a, buf_A, -tau[-1] if tau.requires_grad else -float(tau[-1])
            )
            f = close.repeat_interleave(H)[:, None, None]
            Ws = [torch.where(f, n, o) for n, o in zip(new_W, Ws)]
            bs = [torch.where(f, n, o) for n, o in zip(new_b, bs)]
        state["n"] = state["n"] + valid.long()
        self._store_weights(state, Ws, bs)
        for i, a, A in zip(L, buf_a, buf_A):
            state[f"a{i}"], state[f"A{i}"] = a.view(B, H, b, -1), A.view(B, H, b, -1)
        return z

    def _primal(self, q, k, v, lr) -> torch.Tensor:
        """Reference primal form: one token at a time, W_i materialised for every token."""
        B, H, T, d = q.shape
        b = self.mini_batch_size
        cos, sin = self._rope(q.dtype, q.device)
        pos = torch.arange(T, device=q.device) % b
        q = apply_rope(q, cos[pos], sin[pos]).reshape(B * H, T, d)
        k = apply_rope(k, cos[pos], sin[pos]).reshape(B * H, T, d)
        ln_w, ln_b = self._ln_params(B)
        BT = ln_b - (v.reshape(B * H, T, d) - k)
        WLR = ln_w * lr.reshape(B * H, T, 1)
        tau = self._tau(q.dtype)
        W0, b0 = self._weights(B, None)
        S = [torch.zeros_like(W) for W in W0]  # Σ_j lr_j a_j^T G_j over the mini-batch so far
        s = [torch.zeros_like(x) for x in b0]
        outs = []
        for t in range(T):
            i = t % b
            if i == 0 and t > 0:  # the previous mini-batch closed at W_b
                W0 = [W - tau[-1] * dW for W, dW in zip(W0, S)]
                b0 = [x - tau[-1] * db for x, db in zip(b0, s)]
                S = [torch.zeros_like(W) for W in W0]
                s = [torch.zeros_like(x) for x in b0]
            kt = k[:, t : t + 1]
            acts, As = key_pass(kt, BT[:, t : t + 1], WLR[:, t : t + 1], W0, b0, ln_w)
            S = [torch.baddbmm(dW, a.transpose(1, 2), A) for dW, a, A in zip(S, acts, As)]
            s = [db + A for db, A in zip(s, As)]
            tau_i = tau[i]
            Wi = [W - tau_i * dW for W, dW in zip(W0, S)]
            bi = [x - tau_i * db for x, db in zip(b0, s)]
            x = q[:, t : t + 1]
            for j, (W, bb) in enumerate(zip(Wi, bi)):
                x = torch.baddbmm(bb, x, W)
                if j < len(Wi) - 1:
                    x = gelu(x)
            outs.append(x)
        zbar = torch.cat(outs, dim=1).view(B, H, T, d)
        return q.view(B, H, T, d) + self._ln(zbar)


class TTTLinear(TTTLayer):
    """TTT-Linear: inner model f(x) = x + LN(x W + b)."""

    def inner_dims(self, head_dim: int) -> list[int]:
        return [head_dim, head_dim]


class TTTMLP(TTTLayer):
    """TTT-MLP: inner model f(x) = x + LN(GELU(x W1 + b1) W2 + b2), hidden size 4d."""

    def inner_dims(self, head_dim: int) -> list[int]:
        return [head_dim, 4 * head_dim, head_dim]


TTT_LAYERS = {"linear": TTTLinear, "mlp": TTTMLP}


# ----------------------------------------------------------------------------- hybrid attention


class SlidingWindowAttention(nn.Module):
    """Causal multi-head attention over the last ``window`` tokens (the token itself included),
    with RoPE; the hybrid's local mixer beside the TTT layer (``TTTConfig.attention_window``).

    Its recurrent state is constant in size: the last ``window`` rotated keys and values of
    each sequence (``swa_k``, ``swa_v``: (B, window, H, d)), which of them are real
    (``swa_valid``: (B, window)) and the tokens seen (``swa_n``: (B,)). Queries are processed in
    blocks of ``window``; each block attends to itself and the block before it (the state's
    buffer for the first), so the cost is linear in the length."""

    def __init__(self, hidden_size: int, num_heads: int, window: int, rope_theta: float):
        super().__init__()
        self.num_heads, self.head_dim, self.window = num_heads, hidden_size // num_heads, window
        self.rope_theta = rope_theta
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        w, H, d = self.window, self.num_heads, self.head_dim
        z = self.qkv.weight.new_zeros(batch, w, H, d)
        return {
            "swa_k": z,
            "swa_v": z.clone(),
            "swa_valid": torch.zeros(batch, w, dtype=torch.bool, device=z.device),
            "swa_n": torch.zeros(batch, dtype=torch.long, device=z.device),
        }

    def _rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """RoPE on (B, R, H, d) at absolute positions ``pos`` (B, R)."""
        d = self.head_dim
        inv = 1.0 / self.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
        ang = pos[..., None].float() * inv  # (B, R, d/2)
        cos = torch.cat([ang, ang], -1).cos()[:, :, None].to(x.dtype)
        sin = ang.sin()
        sin_signed = torch.cat([-sin, sin], -1)[:, :, None].to(x.dtype)
        return apply_rope(x, cos, sin_signed)

    def forward(
        self, x: torch.Tensor, state: TTTState | None = None, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, R, D = x.shape
        w, H, d = self.window, self.num_heads, self.head_dim
        st = state.tensors if state is not None else self.init_state(B)
        real = torch.arange(R, device=x.device)[None].expand(B, R)
        valid = real < (lengths[:, None] if lengths is not None else R)
        pos = st["swa_n"][:, None] + real
        q, k, v = self.qkv(x).view(B, R, 3, H, d).unbind(2)
        q, k = self._rotate(q, pos), self._rotate(k, pos)
        # blocks of w queries; each sees the previous w keys (the buffer first) and its own
        nb = -(-R // w)
        pad = nb * w - R

        def blocks(t: torch.Tensor) -> torch.Tensor:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
            return t.view(B, nb, w, *t.shape[2:])

        qb, kb, vb, mb = blocks(q), blocks(k), blocks(v), blocks(valid)

        def prev(cur: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
            return torch.cat([buf[:, None], cur[:, :-1]], 1)  # the block before each block

        keys = torch.cat([prev(kb, st["swa_k"]), kb], 2)  # (B, nb, 2w, H, d)
        vals = torch.cat([prev(vb, st["swa_v"]), vb], 2)
        kval = torch.cat([prev(mb, st["swa_valid"]), mb], 2)  # (B, nb, 2w)
        a = torch.arange(w, device=x.device)[:, None]
        c = torch.arange(2 * w, device=x.device)[None]
        rel = w + a - c  # query a's distance to key c: 0 (itself) .. w-1
        allowed = (rel >= 0) & (rel < w)
        mask = allowed[None, None] & kval[:, :, None, :]  # (B, nb, w, 2w)
        mask = mask | (rel == 0)[None, None]  # padded queries see themselves (no empty rows)
        out = F.scaled_dot_product_attention(
            qb.permute(0, 1, 3, 2, 4), keys.permute(0, 1, 3, 2, 4), vals.permute(0, 1, 3, 2, 4),
            attn_mask=mask[:, :, None],
        )  # (B, nb, H, w, d)
        out = out.permute(0, 1, 3, 2, 4).reshape(B, nb * w, D)[:, :R]
        if state is not None:  # the last w real keys and values of each sequence
            n_new = valid.sum(1)
            idx = n_new[:, None] + torch.arange(w, device=x.device)[None]
            ext_k = torch.cat([st["swa_k"], k], 1)
            ext_v = torch.cat([st["swa_v"], v], 1)
            ext_m = torch.cat([st["swa_valid"], valid], 1)
            gather = idx[..., None, None].expand(-1, -1, H, d)
            state["swa_k"] = ext_k.gather(1, gather)
            state["swa_v"] = ext_v.gather(1, gather)
            state["swa_valid"] = ext_m.gather(1, idx)
            state["swa_n"] = st["swa_n"] + n_new
        return self.o_proj(out)
