"""Algorithmic data and models: the math they must get right."""

from __future__ import annotations

import math

import pytest
import torch

from transferlab.core.errors import ConfigError
from transferlab.data.algorithmic import make_dataset
from transferlab.models.mlp import OneHotMLP
from transferlab.models.transformer import AlgorithmicTransformer


def test_modular_labels_and_division():
    d = make_dataset("x/y", 7, 0.5, 0)
    x, y, c = d.inputs[:, 0], d.inputs[:, 1], d.labels
    assert (y != 0).all() and len(c) == 7 * 6
    assert ((c * y) % 7 == x).all()  # c = x / y  <=>  c*y = x (mod 7)
    d2 = make_dataset("x^2+xy+y^2", 11, 0.5, 0)
    a, b = d2.inputs[:, 0], d2.inputs[:, 1]
    assert torch.equal(d2.labels, (a * a + a * b + b * b) % 11)


def test_s5_composition_is_a_group_table():
    d = make_dataset("s5:x*y", 2, 0.5, 0)
    table = d.labels.view(120, 120)
    # every row and column of a group's Cayley table is a permutation of the group
    assert all(len(set(r.tolist())) == 120 for r in table)
    assert all(len(set(col.tolist())) == 120 for col in table.T)


def test_split_depends_on_split_seed_only_and_is_disjoint():
    a = make_dataset("x+y", 13, 0.3, split_seed=1)
    b = make_dataset("x+y", 13, 0.3, split_seed=1)
    c = make_dataset("x+y", 13, 0.3, split_seed=2)
    assert torch.equal(a.train_idx, b.train_idx)
    assert not torch.equal(a.train_idx, c.train_idx)
    assert len(set(a.train_idx.tolist()) & set(a.val_idx.tolist())) == 0
    assert len(a.train_idx) + len(a.val_idx) == 169
    assert len(a.train_idx) == round(0.3 * 169)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_train_fraction_outside_unit_interval_is_refused(bad):
    with pytest.raises(ConfigError, match="train_fraction"):
        make_dataset("x+y", 13, bad, 0)


def test_division_needs_prime_modulus():
    with pytest.raises(ConfigError, match="not prime"):
        make_dataset("x/y", 12, 0.5, 0)


def test_onehot_mlp_equals_linear_on_concatenated_onehots():
    torch.manual_seed(0)
    m = OneHotMLP(11, 11, width=16, activation="relu")
    tokens = torch.randint(0, 11, (50, 2))
    onehot = torch.cat([torch.nn.functional.one_hot(tokens[:, i], 11) for i in range(2)], 1).float()
    W = torch.cat([m.embed[0], m.embed[1]], 0)  # [2p, width]
    ref = torch.relu(onehot @ W) @ m.readout.weight.T
    assert torch.allclose(m(tokens), ref, atol=1e-5)


def _full_causal_reference(model: AlgorithmicTransformer, tokens: torch.Tensor) -> torch.Tensor:
    eq = torch.full_like(tokens[:, :1], model.eq_token)
    x = model.embed[torch.cat([tokens, eq], 1)] + model.pos[:3]
    for block in model.blocks:
        x = block(x, last_only=False)
    return model.ln_f(x[:, -1, :]) @ model.unembed


@pytest.mark.parametrize("layers,ln", [(1, False), (2, True)])
def test_transformer_last_position_shortcut_is_exact(layers, ln):
    torch.manual_seed(0)
    m = AlgorithmicTransformer(13, 13, d_model=32, n_heads=4, d_mlp=64, n_layers=layers, layer_norm=ln)
    tokens = torch.randint(0, 13, (40, 2))
    assert torch.allclose(m(tokens), _full_causal_reference(m, tokens), atol=1e-5)


def test_python_split_is_the_reference_shuffle():
    import random

    d = make_dataset("x+y", 113, 0.3, 0, split_style="python")
    order = list(range(113 * 113))
    random.seed(0)
    random.shuffle(order)
    assert d.train_idx.tolist() == sorted(order[: int(0.3 * 113 * 113)]) and len(d.train_idx) == 3830
    assert d.val_idx.tolist() == sorted(order[3830:])
    with pytest.raises(ConfigError, match="split_style"):
        make_dataset("x+y", 113, 0.3, 0, split_style="numpy")


def test_eq_output_adds_one_never_targeted_logit():
    torch.manual_seed(0)
    m = AlgorithmicTransformer(23, 23, d_model=16, n_heads=2, d_mlp=32, eq_output=True)
    assert m(torch.tensor([[1, 2], [3, 4]])).shape == (2, 24)
    assert m.unembed.std().item() == pytest.approx(1 / 24**0.5, rel=0.2)


def test_quadratic_activation_gradients_are_exact_and_work_under_vmap():
    from torch.func import grad, vmap

    from transferlab.models.mlp import QuadraticActivation

    act = QuadraticActivation()
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(act, (x,)) and torch.autograd.gradgradcheck(act, (x,))
    per_row = vmap(grad(lambda row: act(row).sum()))(x.detach())
    assert torch.equal(per_row, 2 * x.detach())


def _mha_reference_block(block, style):
    """The same block written with torch's nn.MultiheadAttention and nn.Sequential, as the public reference
    code writes it (post-LN for Power et al.'s reproduction, LN-then-residual for Grokfast's)."""
    import torch.nn as nn

    d = block.norm1.normalized_shape[0]
    bias = style == "grokfast"
    mha = nn.MultiheadAttention(d, block.n_heads, bias=bias, batch_first=True)
    mlp = nn.Sequential(nn.Linear(d, block.mlp_in.out_features, bias=bias),
                        nn.GELU() if bias else nn.ReLU(), nn.Linear(block.mlp_in.out_features, d, bias=bias))
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.in_proj)
        mha.out_proj.weight.copy_(block.out_proj.weight)
        if bias:
            mha.in_proj_bias.copy_(block.in_bias)
            mha.out_proj.bias.copy_(block.out_proj.bias)
        mlp[0].weight.copy_(block.mlp_in.weight)
        mlp[2].weight.copy_(block.mlp_out.weight)
        if bias:
            mlp[0].bias.copy_(block.mlp_in.bias)
            mlp[2].bias.copy_(block.mlp_out.bias)

    def run(x):
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        if style == "power":
            a, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
            x = block.norm1(x + a)
            return block.norm2(x + mlp(x))
        x = block.norm1(x)
        a, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
        x = x + a
        return x + mlp(block.norm2(x))

    return run


@pytest.mark.parametrize("style", ["power", "grokfast"])
def test_equation_transformer_blocks_equal_the_references_module_layout(style):
    from transferlab.models.transformer import EquationTransformer

    torch.manual_seed(0)
    model = EquationTransformer(97, 97, style=style)
    x = torch.randn(5, 4, 128)
    ref = _mha_reference_block(model.blocks[0], style)
    assert torch.allclose(model.blocks[0](x), ref(x), atol=1e-5)
    # the last block computes only the position the readout reads: the same numbers as the full block's
    full = _mha_reference_block(model.blocks[1], style)(x)
    assert torch.allclose(model.blocks[1](x, last_only=True)[:, 0], full[:, -1], atol=1e-5)
    # [x, ∘, y, =]: 4 tokens in, p + 2 outputs; the embeddings are nn.Embedding's N(0, 1)
    assert model(torch.tensor([[3, 5]])).shape == (1, 99)
    assert model.embed.std().item() == pytest.approx(1.0, rel=0.05)
    assert (model.op_token, model.eq_token) == ((97, 98) if style == "power" else (98, 97))
    assert model.pos.shape[0] == (4 if style == "power" else 5)  # ironjr/grokfast: seq_len=5, one row unread


def test_mlp_inits_follow_their_references():
    from transferlab.models.mlp import OneHotMLP

    torch.manual_seed(0)
    g = OneHotMLP(97, 97, width=500, init="gromov")
    assert g.embed.std().item() == pytest.approx(0.05, rel=0.03)
    assert g.readout.weight.std().item() == pytest.approx(0.05, rel=0.03)
    pt = OneHotMLP(113, 113, width=200, depth=2, activation="relu", init="pytorch")
    bound = 1 / math.sqrt(226)  # nn.Linear(226, 200)'s default: uniform ±1/sqrt(fan_in)
    assert pt.embed.abs().max().item() <= bound and pt.embed.abs().max().item() > 0.95 * bound
    assert pt.readout.weight.abs().max().item() <= 1 / math.sqrt(200)
