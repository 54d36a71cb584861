"""MoFO: only the top-|momentum| coordinates move, moments update everywhere, fraction=1 is AdamW."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import compose_config

from ragforget.errors import ConfigError
from ragforget.methods.build import build_method
from ragforget.methods.mofo import MoFO, top_fraction_mask

# 10 coordinates, fraction 0.3: k = ceil(0.3 * 10) = 3 move per step.
GRAD_1 = [0.1, -5.0, 0.2, 3.0, -0.3, 0.4, 4.0, 0.5, -0.6, 0.7]
GRAD_2 = [10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def _step(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, grad: list[float]) -> None:
    param.grad = torch.tensor(grad)
    optimizer.step()


def test_only_the_largest_momentum_coordinates_move() -> None:
    param = torch.nn.Parameter(torch.ones(10))
    optimizer = MoFO([param], lr=0.1, weight_decay=0.5, fraction=0.3)

    # Step 1: m_1 = 0.1 * g, so the top-3 |m_1| are indices 1 (-5), 6 (4) and 3 (3).
    # Bias-corrected: m_hat = g, v_hat = g^2, so each step is lr * sign(g) (eps is negligible), after the
    # decoupled decay 1 - lr * wd = 0.95: index 1 -> 0.95 + 0.1 = 1.05, indices 3, 6 -> 0.95 - 0.1 = 0.85.
    _step(optimizer, param, GRAD_1)
    expected = torch.ones(10)
    expected[[1, 3, 6]] = torch.tensor([1.05, 0.85, 0.85])
    moved = param.detach() != 1.0
    assert moved.nonzero().flatten().tolist() == [1, 3, 6]
    assert torch.equal(param.detach()[~moved], torch.ones(7))  # bit-identical, weight decay included
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)

    # Step 2: m_2 = 0.9 * m_1 + 0.1 * g_2, for ALL coordinates (also the unselected ones):
    # m_2[0] = 0.9 * 0.01 + 1.0 = 1.009, m_2[1] = -0.45, m_2[6] = 0.36, m_2[3] = 0.27, m_2[9] = 0.063.
    # The top 3 are now indices 0, 1 and 6: index 3 stays, index 0 moves for the first time.
    _step(optimizer, param, GRAD_2)
    m_2 = 0.9 * 0.1 * torch.tensor(GRAD_1) + 0.1 * torch.tensor(GRAD_2)
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], m_2)
    after_2 = param.detach()
    assert after_2[3].item() == pytest.approx(0.85, abs=1e-6)
    assert (after_2 != expected).nonzero().flatten().tolist() == [0, 1, 6]
    assert torch.equal(after_2[[2, 4, 5, 7, 8, 9]], torch.ones(6))


def test_fraction_one_is_exactly_adamw() -> None:
    torch.manual_seed(0)
    start = [torch.randn(3, 4), torch.randn(5)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    mofo = MoFO(ours, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, fraction=1.0)
    adamw = torch.optim.AdamW(theirs, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for params, optimizer in ((ours, mofo), (theirs, adamw)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert not torch.equal(ours[0], start[0])


def test_mask_keeps_exactly_k_even_with_float_noise_and_ties() -> None:
    # 0.3 * 10 = 3.0000000000000004 in floating point: still 3, not 4.
    assert top_fraction_mask(torch.arange(10.0), 0.3).sum().item() == 3
    assert top_fraction_mask(torch.zeros(10), 0.3).sum().item() == 3  # all tied: still exactly k
    assert top_fraction_mask(torch.arange(4.0), 0.01).tolist() == [False, False, False, True]  # at least 1
    assert top_fraction_mask(torch.tensor([[1.0, -3.0], [2.0, 0.5]]), 0.5).tolist() == [[False, True],
                                                                                         [True, False]]


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, True, float("nan")])
def test_bad_fraction_names_the_key(fraction: float) -> None:
    with pytest.raises(ConfigError) as err:
        MoFO([torch.nn.Parameter(torch.ones(2))], lr=1e-3, fraction=fraction)
    assert err.value.key == "fraction" and err.value.relative  # its own parameter; see the config test below


@pytest.mark.parametrize(("kwargs", "key", "relative"), [({"lr": -1.0}, "train.lr", False),
                                                         ({"weight_decay": -0.1}, "train.weight_decay", False),
                                                         ({"betas": (0.9, 1.0)}, "betas", True)])
def test_bad_adam_settings_name_the_key(kwargs: dict, key: str, relative: bool) -> None:
    """train.lr and train.weight_decay are named absolutely: they come from train.*, not from the optimizer node."""
    with pytest.raises(ConfigError) as err:
        MoFO([torch.nn.Parameter(torch.ones(2))], fraction=0.1, **kwargs)
    assert err.value.key == key and err.value.relative == relative


@pytest.mark.parametrize(("override", "key"), [("method.optimizer.fraction=1.5", "method.optimizer.fraction"),
                                               ("+method.optimizer.eps=-1", "method.optimizer.eps")])
def test_bad_settings_in_the_config_fail_at_build_naming_the_full_key(override: str, key: str) -> None:
    """The optimizer is a partial: Method calls it once at build, and the node's key goes in front."""
    with pytest.raises(ConfigError) as err:
        build_method(compose_config(["method=mofo", override]).method)
    assert err.value.key == key


def test_state_dict_round_trip_resumes_identically() -> None:
    """A Lightning resume rebuilds the optimizer and loads its (torch.save'd) state dict."""
    torch.manual_seed(0)
    grads = [torch.randn(6) for _ in range(5)]
    param = torch.nn.Parameter(torch.randn(6))
    optimizer = MoFO([param], lr=1e-2, weight_decay=0.01, fraction=0.5)
    for grad in grads[:3]:
        _step(optimizer, param, grad.tolist())
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)

    resumed_param = torch.nn.Parameter(param.detach().clone())
    resumed = MoFO([resumed_param], lr=1e-2, weight_decay=0.01, fraction=0.5)
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.state[resumed_param]["step"].item() == 3
    for grad in grads[3:]:
        _step(optimizer, param, grad.tolist())
        _step(resumed, resumed_param, grad.tolist())
    assert torch.equal(param, resumed_param)


def test_config_builds_the_optimizer_with_train_lr_and_weight_decay() -> None:
    method = build_method(compose_config(["method=mofo", "method.optimizer.fraction=0.2"]).method)
    optimizer = method.optimizer([torch.nn.Parameter(torch.ones(2))], lr=5e-4, weight_decay=0.01)
    assert isinstance(optimizer, MoFO)
    assert optimizer.defaults["fraction"] == 0.2
    assert optimizer.defaults["lr"] == 5e-4 and optimizer.defaults["weight_decay"] == 0.01
