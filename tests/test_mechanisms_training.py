"""The training loop's mechanisms, each checked against an independent computation so that removing or
altering it makes a test fail: the learning-rate schedule, gradient accumulation, how ``training_step``
adds the weighted terms to the NLL, the reference pass as the step sees it, and resuming mid-epoch.

Independent means: NLLs from the model's own full logits and ``F.cross_entropy`` (not the chunked path),
learning rates from the warmup + cosine formula written out, updates from plain SGD arithmetic.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config
from omegaconf import DictConfig

from ragforget.data.encoding import IGNORE_INDEX, collate_for_training
from ragforget.data.rag_examples import TrainingExample, encode_for_training
from ragforget.methods.base import LossTerm, Method, StepTensors
from ragforget.models.head import final_hidden
from ragforget.models.loading import attach_lora, load_model, load_tokenizer
from ragforget.training.module import RagFineTuner
from ragforget.training.train import fit

# Every example has the same target, so every batch row has the same number of answer tokens: a mean
# over a batch of 2 then equals the mean of the two rows' means (what accumulating 2 batches of 1 gives).
QUESTIONS = ["Capital of France?", "Who wrote Hamlet?", "Largest planet?", "Tallest tower in Paris?",
             "Speed of light?", "Author of Faust?"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str) -> Any:
    return load_tokenizer(tiny_model_path)


def _examples(n: int) -> list[TrainingExample]:
    return [TrainingExample(id=f"q{i}", messages=[{"role": "user", "content": question}], plain_text=question,
                            target="It is in the first document.", golden_answers=["first"])
            for i, question in enumerate(QUESTIONS[:n])]


def _cfg(*overrides: str) -> DictConfig:
    return compose_config(["model=tiny_random", "train.checkpoint_every_n_steps=1000", *overrides])


def _lora_model(path: str, dropout: float = 0.0, seed: int = 0, base_dropout: float = 0.0) -> torch.nn.Module:
    """The tiny model with LoRA whose B is random (fresh LoRA has B = 0: its A would get no gradient)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(path, attention_dropout=base_dropout)
    model = attach_lora(base, {**compose_config(["model=tiny_random"]).model.lora, "dropout": dropout})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model.train()


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _full_logit_nll(model: torch.nn.Module, input_ids: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (everything after the first ``n_prompt``) of one row [T]."""
    logits = model(input_ids=input_ids[None]).logits[0]
    return F.cross_entropy(logits[n_prompt - 1:-1], input_ids[n_prompt:])


# ---------------------------------------------------------------------------------------------- schedule


class LearningRates(L.Callback):
    """The learning rate each optimizer step uses."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.seen.append(optimizer.param_groups[0]["lr"])


def _warmup_cosine(step: int, lr: float, warmup: int, total: int) -> float:
    """Linear warmup from 0 over ``warmup`` steps, then half a cosine from ``lr`` down to 0 at ``total``."""
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_lr_warms_up_linearly_then_follows_a_cosine_per_optimizer_step(tiny_model_path: str, tokenizer: Any,
                                                                        tmp_path: Path) -> None:
    # 8 optimizer steps of 2 accumulated batches each; warmup_ratio 0.25 -> int(0.25 * 8) = 2 warmup steps.
    cfg = _cfg("trainer.max_steps=8", "trainer.accumulate_grad_batches=2", "train.batch_size=1",
               "train.warmup_ratio=0.25", "train.lr=0.01")
    lrs = LearningRates()
    fit(cfg, _lora_model(tiny_model_path), tokenizer, Method("sft"), _examples(4), tmp_path, None, callbacks=[lrs])
    expected = [_warmup_cosine(step, 0.01, 2, 8) for step in range(8)]
    # by hand: 0, lr/2, lr, then lr * (1 + cos(pi * k / 6)) / 2 for k = 1..5
    assert expected[:3] == [0.0, 0.005, 0.01] and expected[5] == pytest.approx(0.005)
    assert lrs.seen == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------- gradient accumulation


def _sgd_update(cfg: DictConfig, model: torch.nn.Module, tokenizer: Any, workdir: Path) -> dict[str, torch.Tensor]:
    """theta_after - theta_before of one training run with plain SGD (whose update is lr * gradient)."""
    before = _trainable(model)
    fit(cfg, model, tokenizer, Method("sft", optimizer=partial(torch.optim.SGD)), _examples(2), workdir, None)
    return {name: p.detach() - before[name] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("layout", [("trainer.accumulate_grad_batches=2", "train.batch_size=1"),
                                    ("trainer.accumulate_grad_batches=1", "train.batch_size=2")])
def test_one_step_over_two_examples_is_minus_lr_times_the_mean_gradient(
        layout: tuple[str, str], tiny_model_path: str, tokenizer: Any, tmp_path: Path) -> None:
    """Two accumulated batches of 1 and one batch of 2 both take the step of the mean NLL of the 2 examples."""
    lr = 0.5
    cfg = _cfg("trainer.max_steps=1", "trainer.gradient_clip_val=null", "train.warmup_ratio=0", f"train.lr={lr}",
               *layout)
    model = _lora_model(tiny_model_path)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    for example in _examples(2):
        encoded = encode_for_training(example, tokenizer, cfg.model.chat_template)
        ids = torch.tensor(encoded.prompt_ids + encoded.answer_ids)
        nll = _full_logit_nll(model, ids, len(encoded.prompt_ids))
        for name, grad in zip(params, torch.autograd.grad(nll, list(params.values()))):
            grads[name] += grad / 2

    update = _sgd_update(cfg, model, tokenizer, tmp_path)
    assert max(g.abs().max().item() for g in grads.values()) > 1e-3  # the step is visible at all
    for name, grad in grads.items():
        torch.testing.assert_close(update[name], -lr * grad, atol=1e-6, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------------------- training_step


class Constant(LossTerm):
    """A term whose value is known (with a graph to the policy, as a real term has); records its step."""

    def __init__(self, weight: float, constant: float, needs_reference: bool = False) -> None:
        super().__init__(weight=weight)
        self.constant = constant
        self.needs_reference = needs_reference
        self.steps: list[StepTensors] = []

    def value(self, step: StepTensors) -> torch.Tensor:
        self.steps.append(step)
        return step.policy.hidden.sum() * 0.0 + self.constant


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """Two examples of different prompt lengths, right-padded: labels on the answers only."""
    encoded = [encode_for_training(ex, tokenizer, True) for ex in _examples(4)[::3]]
    assert len(encoded[0].prompt_ids) != len(encoded[1].prompt_ids)
    return collate_for_training(encoded, tokenizer.pad_token_id)


def test_training_step_is_the_nll_plus_each_weight_times_its_term(tiny_model_path: str, tokenizer: Any) -> None:
    model = _lora_model(tiny_model_path)  # no dropout: the step is deterministic
    terms = {"a": Constant(weight=2.0, constant=0.75), "b": Constant(weight=0.5, constant=3.0)}
    module = RagFineTuner(model, Method("x", terms=terms), lr=1e-3, loss_chunk_rows=3)
    batch = _batch(tokenizer)

    loss = module.training_step(batch, 0)

    nlls = []  # the batch NLL is the mean over all answer tokens of the batch (here: equal counts per row)
    for row in range(2):
        n = int(batch["attention_mask"][row].sum())
        n_prompt = int((batch["labels"][row, :n] == IGNORE_INDEX).sum())
        nlls.append(_full_logit_nll(model, batch["input_ids"][row, :n], n_prompt))
    assert (batch["labels"][0] != IGNORE_INDEX).sum() == (batch["labels"][1] != IGNORE_INDEX).sum()
    expected = (nlls[0] + nlls[1]) / 2 + 2.0 * 0.75 + 0.5 * 3.0
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert loss.requires_grad
    assert [len(term.steps) for term in terms.values()] == [1, 1]
    assert terms["a"].steps[0].chunk_rows == 3  # train.loss_chunk_rows reaches the terms
    assert terms["a"].steps[0].reference is None  # no term asked for one: no reference pass


def test_the_step_hands_terms_the_base_model_without_dropout_as_reference(tiny_model_path: str,
                                                                          tokenizer: Any) -> None:
    """Adapters off, dropout off (base and LoRA dropout 0.5), train mode restored: inside training_step."""
    model = _lora_model(tiny_model_path, dropout=0.5, base_dropout=0.5)
    term = Constant(weight=1.0, constant=0.0, needs_reference=True)
    module = RagFineTuner(model, Method("x", terms={"kl": term}), lr=1e-3)
    batch = _batch(tokenizer)
    with torch.no_grad():
        for _ in range(2):
            module.training_step(batch, 0)
            assert model.training, "the reference pass must give train mode back"
    with torch.no_grad():
        base = final_hidden(load_model(tiny_model_path), batch).hidden  # the starting weights, eval mode
        model.eval()
        adapted = final_hidden(model, batch).hidden
    first, second = term.steps
    assert first.reference is not None and second.reference is not None
    torch.testing.assert_close(first.reference.hidden, base, atol=1e-6, rtol=1e-6)   # adapters off, no dropout
    assert torch.equal(first.reference.hidden, second.reference.hidden)            # deterministic
    assert not torch.allclose(first.policy.hidden, second.policy.hidden)           # while dropout is on
    assert not torch.allclose(adapted, base, atol=1e-4)                             # and the adapters matter


# ----------------------------------------------------------------------------------------------- resume


class KillAt(L.Callback):
    """Stops training with an error once ``step`` optimizer steps are done (a crash between checkpoints)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_a_run_resumed_mid_epoch_trains_the_same_adapter(tiny_model_path: str, tokenizer: Any,
                                                         tmp_path: Path) -> None:
    """6 examples in batches of 2 (3 an epoch), checkpoint at step 2, crash at step 3, resume to step 4.

    LoRA dropout is on, so the resumed steps must draw the uninterrupted run's masks (RNG states in the
    checkpoint), take the uninterrupted run's next batch (the data module's progress), and start from the
    checkpoint's adapters (the trimmed state dict)."""
    cfg = _cfg("trainer.max_steps=4", "train.batch_size=2", "train.checkpoint_every_n_steps=2",
               "train.warmup_ratio=0")
    examples = _examples(6)
    straight = fit(cfg, _lora_model(tiny_model_path, dropout=0.3), tokenizer, Method("sft"), examples,
                   tmp_path / "straight", None)
    with pytest.raises(RuntimeError, match="killed"):
        fit(cfg, _lora_model(tiny_model_path, dropout=0.3), tokenizer, Method("sft"), examples,
            tmp_path / "resumed", None, callbacks=[KillAt(3)])
    assert (tmp_path / "resumed" / "lightning" / "last.ckpt").exists()
    resumed = fit(cfg, _lora_model(tiny_model_path, dropout=0.3, seed=123), tokenizer, Method("sft"), examples,
                  tmp_path / "resumed", None)
    start = _trainable(_lora_model(tiny_model_path, dropout=0.3))
    want, got = _trainable(straight), _trainable(resumed)
    assert any(not torch.equal(want[name], start[name]) for name in want)  # it trained at all
    for name in want:
        assert torch.equal(got[name], want[name]), name
