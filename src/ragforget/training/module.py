"""The LightningModule: answer NLL plus whatever loss terms the method contributes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from transformers import get_cosine_schedule_with_warmup

from ragforget.methods.base import Method, StepTensors, parameters_to_train
from ragforget.methods.losses import answer_nll
from ragforget.models.head import check_head, final_hidden
from ragforget.training.reference import ReferenceModel


class RagFineTuner(L.LightningModule):
    """One training step for every method: the loop never looks at the method's name."""

    # Checkpoints hold only trainable tensors (the adapters), so loading them is non-strict.
    strict_loading = False

    def __init__(self, model: torch.nn.Module, method: Method, lr: float, weight_decay: float = 0.0,
                 warmup_ratio: float = 0.0, loss_chunk_rows: int = 64) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.loss_terms = torch.nn.ModuleDict(method.terms)
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.loss_chunk_rows = loss_chunk_rows
        self.reference = ReferenceModel(model) if method.needs_reference else None

    def on_fit_start(self) -> None:
        # The losses read backbone + head instead of the model's logits: check once that they agree.
        check_head(self.model, torch.arange(8, device=self.device)[None])

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        policy = final_hidden(self.model, batch)
        reference = self.reference.outputs(batch) if self.reference is not None else None
        step = StepTensors(batch=batch, policy=policy, reference=reference, model=self.model,
                           chunk_rows=self.loss_chunk_rows)
        nll = answer_nll(policy, batch["labels"], self.loss_chunk_rows)
        terms = {name: term(step) for name, term in self.loss_terms.items()}
        loss = nll + sum(terms.values(), torch.zeros((), device=nll.device))
        batch_size = batch["input_ids"].shape[0]
        self.log("train/nll", nll.detach(), prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/loss", loss.detach(), batch_size=batch_size)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.method.optimizer(parameters_to_train(self.model), lr=self.lr,
                                          weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(self.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable tensors (a LoRA resume checkpoint is megabytes, not the whole model), and
        the RNG states: a resumed run must draw the same dropout masks as an uninterrupted one."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        states = _collect_rng_states()
        # numpy's state holds an ndarray, which Lightning's torch.load(weights_only=True) refuses.
        kind, keys, *rest = states["numpy"]
        checkpoint["rng_states"] = {**states, "numpy": (kind, keys.tolist(), *rest)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:  # checkpoints written before RNG states were kept have none
            states = checkpoint["rng_states"]
            kind, keys, *rest = states["numpy"]
            _set_rng_states({**states, "numpy": (kind, np.asarray(keys, dtype=np.uint32), *rest)})
