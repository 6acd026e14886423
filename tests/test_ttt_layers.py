"""TTT layers: dual form = primal form, resumable state, batching of states (float64)."""

from __future__ import annotations

import random

import pytest
import torch

from itc.ttt import TTTMLP, TTTConfig, TTTLinear, TTTState
from itc.ttt.layers import inner_layer_norm, inner_loss_grad

VARIANTS = [(t, b) for t in ("linear", "mlp") for b in ("transformer", "mamba")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_layer(ttt_type: str, backbone: str, seed: int = 0) -> TTTLinear | TTTMLP:
    """A float64 layer with inner weights, τ' and lr large enough that the inner updates matter."""
    torch.manual_seed(seed)
    cfg = TTTConfig(
        hidden_size=64, num_attention_heads=2, ttt_layer_type=ttt_type, backbone=backbone
    )
    layer = (TTTLinear if ttt_type == "linear" else TTTMLP)(cfg).double()
    with torch.no_grad():
        for p in layer.inner_params():
            p.normal_(0.0, 0.3 if p.shape[-2] > 1 else 0.1)
        layer.token_idx_offset.normal_(0.0, 0.1)
        layer.ttt_norm_weight.normal_(1.0, 0.1)
        layer.lr_proj.bias.fill_(2.0)
    return layer


def test_inner_loss_grad_matches_autograd():
    torch.manual_seed(0)
    z = torch.randn(3, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 2, 5, 8, dtype=torch.float64)
    w, b = torch.randn(2, 1, 8, dtype=torch.float64), torch.randn(2, 1, 8, dtype=torch.float64)
    loss = 0.5 * (inner_layer_norm(z, w, b) - target).pow(2).sum()
    (auto,) = torch.autograd.grad(loss, z)
    assert torch.allclose(inner_loss_grad(z.detach(), b - target, w), auto, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ttt_type,backbone", VARIANTS)
def test_dual_form_equals_primal_form(ttt_type, backbone):
    layer = make_layer(ttt_type, backbone)
    x = torch.randn(2, 41, 64, dtype=torch.float64)  # 2 full mini-batches and a partial one
    with torch.no_grad():
        dual, primal = layer(x), layer(x, mode="primal")
        layer.eta_base = 0.0
        frozen = layer(x)  # the same layer without inner updates
    assert (dual - primal).abs().max().item() < 1e-10
    assert (dual - frozen).abs().max().item() > 1e-3  # the test-time updates do change the outputs


@pytest.mark.parametrize("ttt_type,backbone", VARIANTS)
def test_state_resumes_at_any_position(ttt_type, backbone):
    layer = make_layer(ttt_type, backbone)
    x = torch.randn(2, 41, 64, dtype=torch.float64)
    rng = random.Random(0)
    with torch.no_grad():
        full = layer(x)
        for _ in range(3):
            # random chunks (mostly mid-mini-batch cuts) over 38 tokens, then 3 one-token steps
            cuts = sorted(rng.sample(range(1, 38), 3))
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, 38])] + [1, 1, 1]
            state, outs, i = TTTState(layer.init_state(2)), [], 0
            for s in sizes:
                outs.append(layer(x[:, i : i + s], state=state))
                i += s
            assert (torch.cat(outs, 1) - full).abs().max().item() < 1e-10, sizes
            assert state["n"].tolist() == [41, 41]


def test_states_batch_and_fork():
    layer = make_layer("mlp", "mamba")
    x = torch.randn(2, 30, 64, dtype=torch.float64)
    with torch.no_grad():
        # two sequences run separately, then stacked: continuing the stack = continuing each
        parts = []
        for i, n in enumerate((9, 20)):
            st = TTTState(layer.init_state(1))
            layer(x[i : i + 1, :n], state=st)
            parts.append(st)
        stacked = TTTState.cat(parts)
        assert stacked["n"].tolist() == [9, 20]
        nxt = torch.randn(2, 5, 64, dtype=torch.float64)
        batched = layer(nxt, state=stacked)
        for i in range(2):
            alone = layer(nxt[i : i + 1], state=parts[i])
            assert (batched[i] - alone[0]).abs().max().item() < 1e-12
        # a fork (repeat) continues exactly like the original
        st = TTTState(layer.init_state(1))
        layer(x[:1, :13], state=st)
        fork = st.repeat_interleave(3)
        ref = layer(nxt[:1], state=st.clone())
        out = layer(nxt[:1].expand(3, -1, -1), state=fork)
        assert (out - ref).abs().max().item() < 1e-12
        assert fork.index_select(torch.tensor([2])).nbytes() == st.nbytes()


@pytest.mark.parametrize("ttt_type", ["linear", "mlp"])
def test_dual_form_gradients_equal_primal_form_gradients(ttt_type):
    """Training back-propagates through the dual form: its gradients match the primal form's."""
    layer = make_layer(ttt_type, "mamba")
    x = torch.randn(1, 37, 64, dtype=torch.float64)
    r = torch.randn(1, 37, 64, dtype=torch.float64)
    params = [p for p in layer.parameters() if p.requires_grad]
    dual = torch.autograd.grad((layer(x) * r).sum(), params)
    primal = torch.autograd.grad((layer(x, mode="primal") * r).sum(), params)
    for p, a, b in zip(params, dual, primal):
        assert (a - b).abs().max().item() < 1e-9 * max(1.0, b.abs().max().item()), p.shape
    assert dual[params.index(layer.token_idx_offset)].abs().sum() > 0
