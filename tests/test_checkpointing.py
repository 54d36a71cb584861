"""Activation checkpointing (train.gradient_checkpointing): same training, activations recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config, run_of, tiny_config
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from ragforget.models.head import final_hidden
from ragforget.pipeline import run_job
from ragforget.training.train import make_trainable


def _layer_forward_calls(checkpointing: bool, tiny_model_path: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """How often layer 0's MLP runs in one forward + backward (a recomputation runs it again)."""
    from ragforget.models.loading import load_model

    cfg = compose_config(["model=tiny_random", f"train.gradient_checkpointing={str(checkpointing).lower()}"])
    model = make_trainable(load_model(tiny_model_path), cfg)
    mlp = model.get_decoder().layers[0].mlp
    forward, calls = type(mlp).forward, []

    def counted(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
        calls.extend([1] if self is mlp else [])
        return forward(self, *args, **kwargs)

    # Patched on the class: forward hooks do not fire when checkpointing recomputes a layer.
    monkeypatch.setattr(type(mlp), "forward", counted)
    ids = torch.randint(10, 1000, (2, 16))
    final_hidden(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}).hidden.sum().backward()
    return len(calls)


def test_checkpointing_recomputes_each_layer_in_backward(tiny_model_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _layer_forward_calls(False, tiny_model_path, monkeypatch) == 1
    assert _layer_forward_calls(True, tiny_model_path, monkeypatch) == 2


@pytest.mark.parametrize("method", ["selfaug"])
def test_checkpointed_run_trains_the_same_model(tmp_path: Path, method: str) -> None:
    """End to end with LoRA dropout on: the same losses and adapter as without checkpointing."""
    losses, adapters = [], []
    for checkpointing in ("false", "true"):
        cfg = tiny_config(tmp_path / checkpointing, f"method={method}", "model.lora.dropout=0.1",
                          f"train.gradient_checkpointing={checkpointing}", "logger.log_every_n_steps=1")
        workdir = tmp_path / checkpointing / "job"
        run_job(cfg, workdir)
        client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
        history = client.get_metric_history(run_of(cfg, workdir).info.run_id, "train/loss")
        losses.append([m.value for m in sorted(history, key=lambda m: m.step)])
        adapters.append(load_file(workdir / "checkpoint" / "adapter" / "adapter_model.safetensors"))
    assert len(losses[0]) >= 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    for name, tensor in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], tensor, atol=1e-6, rtol=1e-5)
