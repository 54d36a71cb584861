"""L2-SP, EWC and orthogonal-LoRA penalties against values worked out by hand, plus gradients,
the Fisher estimate, its cache, and one setup + value + backward per term on the tiny model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_config
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from ragforget.data.general import GeneralDataSource
from ragforget.errors import ConfigError
from ragforget.methods import ewc as ewc_module
from ragforget.methods.base import MethodContext, StepTensors
from ragforget.methods.build import build_method
from ragforget.methods.deltas import ParameterSnapshot, effective_delta, lora_layers, squared_delta_norm
from ragforget.methods.ewc import EWC, fisher_weighted_delta_norm
from ragforget.methods.fisher import diagonal_fisher, gradients_enabled
from ragforget.methods.l2sp import L2SP
from ragforget.methods.orthogonal import OrthogonalLoRA, base_energy_share
from ragforget.models.head import FinalHidden, LinearHead
from ragforget.models.loading import attach_lora, load_model, load_tokenizer

# The hand-worked layer used throughout: rank 1, scaling s = lora_alpha / r = 0.5.
#   A = [[1, 2]], B = [[3], [4]]  ->  B @ A = [[3, 6], [4, 8]],  s * B @ A = [[1.5, 3], [2, 4]]
#   ||s B A||^2 = 2.25 + 9 + 4 + 16 = 31.25
#   r x r identity: s^2 * (B^T B) * (A A^T) = 0.25 * 25 * 5 = 31.25
A_HAND = [[1.0, 2.0]]
B_HAND = [[3.0], [4.0]]
S_HAND = 0.5
DELTA_HAND = [[1.5, 3.0], [2.0, 4.0]]
FISHER_HAND = [[1.0, 0.0], [2.0, 0.5]]
# sum F * delta^2 = 1 * 2.25 + 0 * 9 + 2 * 4 + 0.5 * 16 = 18.25
WEIGHTED_HAND = 18.25


def _step() -> StepTensors:
    return StepTensors(batch={}, policy=FinalHidden(torch.zeros(1), LinearHead(torch.zeros(1, 1))), reference=None,
                       model=nn.Identity())


def _context(tmp_path: Path, tokenizer: Any = None) -> MethodContext:
    return MethodContext(model_path="unused", tokenizer=tokenizer, chat_template=True, dtype="float32",
                         cache_dir=tmp_path / "cache", seed=0, max_length=64, model_key={"model": "test"})


def _hand_lora(base: Sequence[Sequence[float]] = ((3.0, 0.0), (0.0, 4.0))) -> nn.Module:
    """A 2x2 linear layer (no bias) with a rank-1 adapter set to A_HAND, B_HAND and s = 0.5."""
    linear = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        linear[0].weight.copy_(torch.tensor(base))
    model = get_peft_model(linear, LoraConfig(r=1, lora_alpha=0.5, target_modules=["0"]))
    layer = lora_layers(model)[0]
    with torch.no_grad():
        layer.A.copy_(torch.tensor(A_HAND))
        layer.B.copy_(torch.tensor(B_HAND))
    return model


class _RowsSource(GeneralDataSource):
    """A general-data source that writes a few fixed rows (and counts how often it is asked)."""

    def __init__(self, rows: int = 3) -> None:
        self.rows = rows

    def materialize(self, cache_dir: Path) -> Path:
        path = cache_dir / "general.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"id": str(i), "prompt": f"Name a colour number {i}.", "response": "Blue, I think."})
                 for i in range(self.rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _ewc(**settings: Any) -> EWC:
    """An EWC term on two fixed rows; ``settings`` override the rest (max_length None: the context's)."""
    return EWC(**{"source": _RowsSource(), "weight": 1.0, "num_samples": 2, "max_length": None, "normalize": True,
                  **settings})


# --- deltas -------------------------------------------------------------------------------------

def test_squared_delta_norm_by_hand() -> None:
    A, B = torch.tensor(A_HAND), torch.tensor(B_HAND)
    torch.testing.assert_close(effective_delta(A, B, S_HAND), torch.tensor(DELTA_HAND))
    assert squared_delta_norm(A, B, S_HAND).item() == pytest.approx(31.25)


def test_rxr_identity_equals_the_explicit_norm() -> None:
    torch.manual_seed(0)
    A, B = torch.randn(3, 7, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    explicit = ((B @ A) * 1.7).square().sum()
    assert squared_delta_norm(A, B, 1.7).item() == pytest.approx(explicit.item(), rel=1e-12)


def test_lora_layers_read_the_peft_adapter() -> None:
    layer, = lora_layers(_hand_lora())
    assert layer.name.endswith("0") and layer.scaling == S_HAND
    assert layer.A.shape == (1, 2) and layer.B.shape == (2, 1)
    torch.testing.assert_close(layer.W, torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    assert lora_layers(nn.Linear(2, 2)) == []


def test_fan_in_fan_out_base_weight_reads_out_by_in() -> None:
    # GPT-2's Conv1D stores its weight [in, out]; W and the delta must both read [out, in].
    model = get_peft_model(nn.Sequential(Conv1D(nf=3, nx=2)),
                           LoraConfig(r=1, target_modules=["0"], fan_in_fan_out=True))
    layer, = lora_layers(model)
    assert layer.fan_in_fan_out and layer.base_weight.shape == (2, 3) and layer.W.shape == (3, 2)
    with torch.no_grad():
        layer.B.fill_(1.0)
    peft_delta = model.base_model.model[0].get_delta_weight("default")  # PEFT's own, in the stored layout
    torch.testing.assert_close(layer.effective_delta(), peft_delta.T)


def test_parameter_snapshot_gives_theta_minus_theta0() -> None:
    linear = nn.Linear(2, 2, bias=False)
    snapshot = ParameterSnapshot(linear)
    with torch.no_grad():
        linear.weight.add_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    (name, delta), = snapshot.deltas()
    assert name == "weight"
    torch.testing.assert_close(delta, torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    assert snapshot.state_dict() == {}  # theta0 stays out of checkpoints


# --- L2-SP --------------------------------------------------------------------------------------

def test_l2sp_lora_by_hand_and_gradients_reach_a_and_b_only(tmp_path: Path) -> None:
    model = _hand_lora()
    term = L2SP(weight=0.1)
    term.setup(model, _context(tmp_path))
    value = term(_step())
    assert value.item() == pytest.approx(0.1 * 0.5 * 31.25)  # alpha * 0.5 * ||s B A||^2 = 1.5625
    value.backward()
    layer, = lora_layers(model)
    # d/dB (alpha/2) ||s B A||^2 = alpha s^2 (B A) A^T = 0.1 * 0.25 * [[15], [20]] = [[0.375], [0.5]]
    # d/dA = alpha s^2 B^T B A = 0.1 * 0.25 * 25 * [1, 2] = [0.625, 1.25]
    torch.testing.assert_close(layer.B.grad, torch.tensor([[0.375], [0.5]]))
    torch.testing.assert_close(layer.A.grad, torch.tensor([[0.625, 1.25]]))
    assert layer.base_weight.grad is None and not layer.base_weight.requires_grad


def test_penalties_stay_in_fp32_under_bf16_autocast(tmp_path: Path) -> None:
    # bf16-mixed training autocasts matmuls; a bf16 Gram matrix would be off by ~1e-3 relative.
    model = _hand_lora()
    layer, = lora_layers(model)
    torch.manual_seed(0)
    with torch.no_grad():
        layer.A.copy_(torch.randn(1, 2))
        layer.B.copy_(torch.randn(2, 1))
    terms = [L2SP(weight=1.0), OrthogonalLoRA(weight=1.0)]
    for term in terms:
        term.setup(model, _context(tmp_path))
        exact = term(_step()).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert term(_step()).item() == pytest.approx(exact, rel=1e-6)


def test_l2sp_full_fine_tuning_by_hand(tmp_path: Path) -> None:
    linear = nn.Linear(2, 2, bias=True)
    term = L2SP(weight=2.0)
    term.setup(linear, _context(tmp_path))
    assert term(_step()).item() == 0.0
    with torch.no_grad():
        linear.weight.add_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))  # ||dW||^2 = 1 + 4 = 5
        linear.bias.add_(torch.tensor([0.0, 1.0]))                   # ||db||^2 = 1
    assert term(_step()).item() == pytest.approx(2.0 * 0.5 * 6.0)


# --- EWC ----------------------------------------------------------------------------------------

def test_fisher_weighted_delta_by_hand() -> None:
    value = fisher_weighted_delta_norm(torch.tensor(A_HAND), torch.tensor(B_HAND), S_HAND, torch.tensor(FISHER_HAND))
    assert value.item() == pytest.approx(WEIGHTED_HAND)


def test_fisher_weighted_delta_gradient_matches_autograd() -> None:
    torch.manual_seed(0)
    A = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    fisher = torch.rand(4, 6, dtype=torch.float64)
    grads = torch.autograd.grad(fisher_weighted_delta_norm(A, B, 0.7, fisher), (A, B))
    naive = (fisher * ((B @ A) * 0.7).square()).sum()
    naive_grads = torch.autograd.grad(naive, (A, B))
    for got, want in zip(grads, naive_grads):
        torch.testing.assert_close(got, want)


def test_diagonal_fisher_of_a_linear_model_by_hand() -> None:
    # loss_n = 0.5 (w . x_n - y_n)^2, so d loss_n / dw = (w . x_n - y_n) x_n. With w = [1, 2]:
    #   x1 = [1, 0], y1 = 0: residual 1 -> gradient [1, 0] -> squared [1, 0]
    #   x2 = [1, 1], y2 = 1: residual 2 -> gradient [2, 2] -> squared [4, 4]
    # F = mean of the squares = [2.5, 2.0]  (the squared MEAN gradient, [2.25, 1], would be wrong)
    w = torch.tensor([1.0, 2.0])
    samples = [(torch.tensor([1.0, 0.0]), 0.0), (torch.tensor([1.0, 1.0]), 1.0)]
    with gradients_enabled([w]):
        fisher, = diagonal_fisher([w], (0.5 * (w @ x - y) ** 2 for x, y in samples))
    torch.testing.assert_close(fisher, torch.tensor([2.5, 2.0]))
    assert not w.requires_grad and w.grad is None  # flag restored, no .grad written


def _fake_fisher(value: list[list[float]]) -> Any:
    def fake(model: nn.Module, targets: Sequence[torch.Tensor], *args: Any) -> list[torch.Tensor]:
        return [torch.tensor(value)]
    return fake


@pytest.mark.parametrize(("normalize", "expected"), [
    (False, 2.0 * 0.5 * WEIGHTED_HAND),           # lambda * 0.5 * sum F delta^2 = 18.25
    (True, 2.0 * 0.5 * WEIGHTED_HAND / 0.875),    # F / mean(F), mean = (1 + 0 + 2 + 0.5) / 4 = 0.875
])
def test_ewc_lora_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, normalize: bool, expected: float) -> None:
    monkeypatch.setattr(ewc_module, "estimate_fisher", _fake_fisher(FISHER_HAND))
    model = _hand_lora()
    term = _ewc(weight=2.0, normalize=normalize)
    term.setup(model, _context(tmp_path))
    value = term(_step())
    assert value.item() == pytest.approx(expected)
    value.backward()
    layer, = lora_layers(model)
    assert layer.A.grad is not None and layer.B.grad is not None and layer.base_weight.grad is None


def test_ewc_full_fine_tuning_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # F = [[1, 0], [2, 0.5]], delta = [[1, 0], [0, -2]]: sum F delta^2 = 1 + 0.5 * 4 = 3; 0.5 * 3 = 1.5
    monkeypatch.setattr(ewc_module, "estimate_fisher", _fake_fisher(FISHER_HAND))
    linear = nn.Linear(2, 2, bias=False)
    term = _ewc(weight=1.0, normalize=False)
    term.setup(linear, _context(tmp_path))
    with torch.no_grad():
        linear.weight.add_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    assert term(_step()).item() == pytest.approx(1.5)


# --- orthogonal ---------------------------------------------------------------------------------

def test_base_energy_share_by_hand() -> None:
    # W = diag(3, 4), ||W||^2 = 25. A row along e1 (any length) reads 3^2 = 9 of it; along e2, 16.
    W = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert base_energy_share(torch.tensor([[2.0, 0.0]]), W).item() == pytest.approx(9 / 25)
    assert base_energy_share(torch.tensor([[0.0, 50.0]]), W).item() == pytest.approx(16 / 25)
    assert base_energy_share(torch.tensor([[2.0, 0.0], [0.0, 5.0]]), W).item() == pytest.approx(1.0)
    # W = [[1, 1], [1, 1]] uses only the direction [1, 1]; A along [1, -1] is orthogonal to it.
    assert base_energy_share(torch.tensor([[1.0, -1.0]]), torch.ones(2, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_orthogonal_term_means_over_layers_and_trains_a_only(tmp_path: Path) -> None:
    # Layer 0: W = diag(3, 4), A = [1, 2] / sqrt(5): (3^2 * 1 + 4^2 * 4) / 5 / 25 = 73 / 125 = 0.584
    # Layer 1: W = [[1, 1], [1, 1]], A = [1, -1]: 0.  Mean: 0.292; lambda 0.5 -> 0.146
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        net[1].weight.fill_(1.0)
    model = get_peft_model(net, LoraConfig(r=1, target_modules=["0", "1"]))
    first, second = lora_layers(model)
    with torch.no_grad():
        first.A.copy_(torch.tensor([[1.0, 2.0]]))
        second.A.copy_(torch.tensor([[1.0, -1.0]]))
    term = OrthogonalLoRA(weight=0.5)
    term.setup(model, _context(tmp_path))
    value = term(_step())
    assert value.item() == pytest.approx(0.5 * (73 / 125) / 2)
    value.backward()
    assert first.A.grad is not None and first.A.grad.abs().sum() > 0
    assert first.B.grad is None and first.base_weight.grad is None  # B is free; W is frozen


def test_orthogonal_without_lora_names_model_lora(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.lora"):
        OrthogonalLoRA(weight=1.0).setup(nn.Linear(2, 2), _context(tmp_path))


# --- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("build", "key"), [
    (lambda: L2SP(weight=-1.0), "weight"),
    (lambda: _ewc(weight=-1.0), "weight"),
    (lambda: _ewc(num_samples=0), "num_samples"),
    (lambda: _ewc(max_length=1), "max_length"),
    (lambda: _ewc(source=object()), "source"),
    (lambda: OrthogonalLoRA(weight=-0.5), "weight"),
])
def test_bad_settings_fail_naming_their_parameter(build: Any, key: str) -> None:
    """Each term names its own parameter; where it is built from a config, the node's key goes in front."""
    with pytest.raises(ConfigError) as error:
        build()
    assert error.value.key == key and error.value.relative


@pytest.mark.parametrize(("method", "override", "key"), [
    ("l2sp", "method.terms.l2sp.weight=-1", "method.terms.l2sp.weight"),
    ("ewc", "method.terms.ewc.max_length=1", "method.terms.ewc.max_length"),
    ("orthogonal", "method.terms.orthogonal.weight=-0.5", "method.terms.orthogonal.weight"),
])
def test_bad_settings_in_the_config_name_the_full_key(method: str, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_method(compose_config([f"method={method}", override]).method)
    assert error.value.key == key


def test_the_config_builds_each_penalty_with_its_settings() -> None:
    l2sp = build_method(compose_config(["method=l2sp"]).method).terms["l2sp"]
    assert isinstance(l2sp, L2SP) and l2sp.weight == 0.01
    ewc = build_method(compose_config(["method=ewc", "method.terms.ewc.weight=0.05"]).method).terms["ewc"]
    assert isinstance(ewc, EWC)
    assert (ewc.weight, ewc.num_samples, ewc.max_length, ewc.normalize) == (0.05, 128, 512, True)
    orthogonal = build_method(compose_config(["method=orthogonal"]).method).terms["orthogonal"]
    assert isinstance(orthogonal, OrthogonalLoRA) and orthogonal.weight == 50.0


# --- the tiny model: setup + value + backward ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_model_path: str) -> tuple[str, Any]:
    return tiny_model_path, load_tokenizer(tiny_model_path)


def _tiny_lora(path: str) -> nn.Module:
    return attach_lora(load_model(path).train(), {"r": 4, "alpha": 8, "dropout": 0.0})


def _nudge_adapters(model: nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.B.normal_(0.0, 0.01)  # B = 0 at init: every delta would be 0


def test_l2sp_on_the_tiny_model_matches_peft_deltas(tmp_path: Path, tiny: tuple[str, Any]) -> None:
    model = _tiny_lora(tiny[0])
    term = L2SP(weight=1.0)
    term.setup(model, _context(tmp_path, tiny[1]))
    assert term(_step()).item() == 0.0
    _nudge_adapters(model)
    modules = dict(model.named_modules())
    explicit = sum(0.5 * modules[layer.name].get_delta_weight("default").square().sum().item()
                   for layer in lora_layers(model))
    value = term(_step())
    assert value.item() == pytest.approx(explicit, rel=1e-5) and value.item() > 0
    value.backward()
    assert all(layer.B.grad is not None for layer in lora_layers(model))


def test_ewc_on_the_tiny_model_caches_the_fisher(tmp_path: Path, tiny: tuple[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_lora(tiny[0])
    context = _context(tmp_path, tiny[1])
    first = _ewc(weight=1.0)
    first.setup(model, context)
    assert context.metrics["ewc/fisher_cache_hit"] == 0.0 and context.metrics["ewc/fisher_s"] > 0
    assert all(not layer.base_weight.requires_grad for layer in lora_layers(model))  # flags restored
    assert all(f.shape == layer.W.shape for f, layer in zip(first.fisher(), lora_layers(model)))
    mean = sum(f.sum() for f in first.fisher()) / sum(f.numel() for f in first.fisher())
    assert mean.item() == pytest.approx(1.0, rel=1e-5)  # normalized

    def must_not_run(*args: Any) -> None:
        raise AssertionError("the cached Fisher should have been used")
    monkeypatch.setattr(ewc_module, "estimate_fisher", must_not_run)
    context.metrics.clear()
    second = _ewc(weight=1.0)
    second.setup(model, context)
    assert context.metrics == {"ewc/fisher_s": 0.0, "ewc/fisher_cache_hit": 1.0}
    for a, b in zip(first.fisher(), second.fisher()):
        torch.testing.assert_close(a, b)

    _nudge_adapters(model)
    value = second(_step())
    assert value.item() > 0
    value.backward()
    assert all(layer.A.grad is not None and layer.B.grad is not None for layer in lora_layers(model))


def test_orthogonal_on_the_tiny_model(tmp_path: Path, tiny: tuple[str, Any]) -> None:
    model = _tiny_lora(tiny[0])
    term = OrthogonalLoRA(weight=1.0)
    term.setup(model, _context(tmp_path, tiny[1]))
    value = term(_step())
    # Random rows of A read about r / in of W's energy: 4 / 64 (or 4 / 256 for the MLP's down_proj).
    assert 0.0 < value.item() < 0.5
    value.backward()
    assert all(layer.A.grad is not None for layer in lora_layers(model))
