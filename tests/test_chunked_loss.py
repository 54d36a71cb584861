"""The chunked loss path (hidden states + LM head, no [B, T, V] logits) against plain autograd on full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config, model_snapshot

from ragforget.data.encoding import IGNORE_INDEX
from ragforget.errors import ConfigError
from ragforget.methods.losses import answer_nll, answer_positions, masked_kl, prompt_positions
from ragforget.models.head import FinalHidden, LinearHead, check_head, final_hidden, linear_head
from ragforget.models.loading import attach_lora, load_model


def full_logit_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The textbook answer NLL on materialized logits."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return F.cross_entropy(logits[:, :-1][mask].double(), targets[mask])


def full_logit_kl(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, direction: str) -> torch.Tensor:
    log_p = torch.log_softmax(policy[mask].double(), -1)
    log_r = torch.log_softmax(reference[mask].double(), -1)
    if direction == "forward":
        return (log_r.exp() * (log_r - log_p)).sum(-1).mean()
    return (log_p.exp() * (log_p - log_r)).sum(-1).mean()


def _labels(batch: int, tokens: int, vocab: int) -> torch.Tensor:
    labels = torch.full((batch, tokens), IGNORE_INDEX)
    labels[:, tokens - 4:tokens - 1] = torch.randint(0, vocab, (batch, 3))
    return labels


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("loss", ["nll", "forward", "reverse"])
def test_chunked_loss_equals_autograd_on_full_logits(loss: str, softcap: float | None) -> None:
    """Value and gradients w.r.t. hidden, head weight and bias, for a head with bias and softcap."""
    torch.manual_seed(0)
    b, t, h, v = 2, 7, 5, 11
    hidden = torch.randn(b, t, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    ref_hidden = torch.randn(b, t, h, dtype=torch.float64)
    ref_weight = torch.randn(v, h, dtype=torch.float64)
    labels = _labels(b, t, v)
    mask = torch.rand(b, t) > 0.3
    head, ref_head = LinearHead(weight, bias, softcap), LinearHead(ref_weight, None, softcap)

    def full(hid: torch.Tensor, w: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        logits = LinearHead(w, bb, softcap).logits(hid)
        if loss == "nll":
            return full_logit_nll(logits, labels)
        return full_logit_kl(logits, ref_head.logits(ref_hidden), mask, loss)

    if loss == "nll":
        chunked = answer_nll(FinalHidden(hidden, head), labels, chunk_rows=2)
    else:
        chunked = masked_kl(FinalHidden(hidden, head), FinalHidden(ref_hidden, ref_head), mask, loss,  # type: ignore[arg-type]
                            chunk_rows=3)
    expected = full(hidden, weight, bias)
    grads = torch.autograd.grad(chunked, (hidden, weight, bias))
    expected_grads = torch.autograd.grad(expected, (hidden, weight, bias))
    assert chunked.item() == pytest.approx(expected.item(), abs=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_frozen_head_gets_no_gradient_and_upstream_scales() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(1, 6, 4, requires_grad=True)
    head = LinearHead(torch.randn(9, 4))  # frozen, as under LoRA
    labels = _labels(1, 6, 9)
    (3.0 * answer_nll(FinalHidden(hidden, head), labels)).backward()
    want = torch.autograd.grad(3.0 * full_logit_nll(head.logits(hidden), labels), hidden)[0]
    assert hidden.grad is not None
    torch.testing.assert_close(hidden.grad, want.float(), atol=1e-6, rtol=1e-5)


def _lora_model(path: str, dtype: str) -> torch.nn.Module:
    cfg = compose_config(["model=tiny_random"])
    model = attach_lora(load_model(path, dtype), {**cfg.model.lora, "dropout": 0.0})
    torch.manual_seed(2)
    with torch.no_grad():  # non-zero adapters: the policy differs from the reference
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return model


def _compare_with_full_logits(model: torch.nn.Module, vocab: int, atol: float) -> None:
    """selfaug's step (NLL + input KL) through the chunked path and through the model's logits."""
    torch.manual_seed(3)
    ids = torch.randint(10, vocab, (2, 24))
    attention = torch.ones_like(ids)
    attention[1, -3:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 16:20] = ids[:, 16:20]
    batch = {"input_ids": ids, "attention_mask": attention, "labels": labels}
    adapters = [p for p in model.parameters() if p.requires_grad]
    mask = prompt_positions(labels, attention)

    with torch.no_grad(), model.disable_adapter():
        reference = final_hidden(model, batch)
        ref_logits = model(input_ids=ids, attention_mask=attention).logits
    policy = final_hidden(model, batch)
    chunked = answer_nll(policy, labels, chunk_rows=5) + 0.5 * masked_kl(policy, reference, mask, chunk_rows=7)
    logits = model(input_ids=ids, attention_mask=attention).logits
    full = full_logit_nll(logits, labels) + 0.5 * full_logit_kl(logits, ref_logits, mask, "forward")
    assert chunked.item() == pytest.approx(full.item(), abs=atol)
    for got, want in zip(torch.autograd.grad(chunked, adapters), torch.autograd.grad(full, adapters)):
        torch.testing.assert_close(got, want.to(got.dtype), atol=atol, rtol=1e-3)


def test_tiny_model_chunked_step_equals_full_logits(tiny_model_path: str) -> None:
    _compare_with_full_logits(_lora_model(tiny_model_path, "float32"), 1000, atol=1e-5)


@pytest.mark.slow
def test_smollm2_chunked_step_equals_full_logits() -> None:
    _compare_with_full_logits(_lora_model(model_snapshot("smollm2_135m"), "float32"), 49152, atol=1e-5)


def test_answer_positions_are_what_the_nll_trains() -> None:
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 4, 5, IGNORE_INDEX]])
    assert answer_positions(labels).tolist() == [[False, True, True, False, False]]


def test_head_check_catches_an_unknown_logit_transform(tiny_model_path: str) -> None:
    model = load_model(tiny_model_path)
    check_head(model, torch.arange(8)[None])  # a Llama: backbone + head reproduce its logits
    model.config.final_logit_softcapping = 0.5  # the head would now cap logits the model does not
    with pytest.raises(ConfigError, match="differ from the model's logits"):
        check_head(model, torch.arange(8)[None])


def test_an_adapted_lm_head_is_refused_naming_the_key(tiny_model_path: str) -> None:
    lora = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "lm_head"]}
    model = attach_lora(load_model(tiny_model_path), lora)
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        linear_head(model)




def test_a_sharded_lm_head_is_refused_naming_the_strategy(tiny_model_path: str) -> None:
    model = load_model(tiny_model_path)
    model.get_output_embeddings().weight = torch.nn.Parameter(torch.zeros(128))  # what FSDP leaves a rank
    with pytest.raises(ConfigError, match="trainer.strategy"):
        linear_head(model)


def test_training_checks_the_head_before_the_first_step(tiny_model_path: str) -> None:
    from ragforget.methods.base import Method
    from ragforget.training.module import RagFineTuner

    model = load_model(tiny_model_path)
    model.config.final_logit_softcapping = 0.5  # a head transform the backbone + head split would not match
    with pytest.raises(ConfigError, match="differ from the model's logits"):
        RagFineTuner(model, Method("sft"), lr=1e-3).on_fit_start()
