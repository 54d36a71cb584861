"""The train stage: fit the LightningModule, resuming from the last checkpoint if there is one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.rag_examples import TrainingExample, encode_for_training
from ragforget.methods.base import Method
from ragforget.models.loading import attach_lora, load_model
from ragforget.tracking.curves import MlflowCurves
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.training.callbacks import configured_callbacks, configured_loggers
from ragforget.training.datamodule import RagDataModule
from ragforget.training.module import RagFineTuner
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import atomic_path
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


def build_trainable_model(cfg: DictConfig, model_path: str) -> PreTrainedModel:
    """The starting model, loaded and made trainable (``make_trainable``)."""
    return make_trainable(load_model(model_path, cfg.model.dtype), cfg)


def make_trainable(model: PreTrainedModel, cfg: DictConfig) -> PreTrainedModel:
    """Fresh LoRA adapters (``model.lora``), or all weights trainable when it is null.

    With ``train.gradient_checkpointing`` each decoder layer keeps only its input and recomputes the
    rest in backward (non-reentrant, so frozen embeddings under LoRA need no input-grad hook, and
    dropout replays the same mask). The no-grad reference pass runs in eval mode and never recomputes.
    """
    model.train()
    if cfg.train.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if cfg.model.get("lora"):
        return attach_lora(model, cfg.model.lora)
    model.requires_grad_(True)
    return model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but a kill mid-write leaves the previous checkpoint, not a torn one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class WholeWeights(L.Callback):
    """FSDP leaves each rank only its shard of every weight; rank 0 needs them whole for the checkpoint folder.

    Gathering is a collective, so every rank joins it at the end of training, while the process group
    is up (``state_dict_type: full`` gathers onto rank 0's CPU only); ``restore`` puts the tensors into
    the model once Lightning has finished with it, since FSDP would trip over replaced parameters.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            state = trainer.strategy.lightning_module_state_dict()
            self.state = state if trainer.is_global_zero else None

    def restore(self, module: torch.nn.Module) -> None:
        if self.state is None:
            return
        # Nested FSDP units (and activation checkpointing) insert wrapper names that the gathered keys lack.
        params = {name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", ""): param
                  for name, param in module.named_parameters()}
        missing = sorted(set(params) - set(self.state))
        if missing:
            raise RuntimeError(f"the gathered FSDP weights lack {missing[:3]}: set trainer.strategy.use_orig_params "
                               "true and trainer.strategy.state_dict_type full")
        for name, param in params.items():
            param.data = self.state[name]


def fit(cfg: DictConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: Method,
        examples: Sequence[TrainingExample], workdir: Path, run: TrackedRun | None,
        callbacks: Sequence[L.Callback] = ()) -> PreTrainedModel:
    """Train ``model`` in place with the method's loss terms and optimizer; returns it.

    The Trainer gets ``callbacks`` (e.g. the forgetting curves), those the job depends on, built here, and
    after them the config's (``cfg.callbacks``, ``cfg.lightning_loggers``: :mod:`ragforget.training.callbacks`).
    Built here whatever the config says: the step checkpoints that ``resume_dir`` continues from (their
    folder and ``last.ckpt`` are where a resumed run looks, the atomic writer keeps a kill from tearing
    one), the MLflow training curves (they need the job's run), and FSDP's gathering of the whole weights.
    """
    encoded = [encode_for_training(ex, tokenizer, cfg.model.chat_template) for ex in examples]
    datamodule = RagDataModule(encoded, cfg.train.batch_size, tokenizer.pad_token_id,
                               cfg.train.max_length, seed=cfg.seed)
    module = RagFineTuner(model, method, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                          warmup_ratio=cfg.train.warmup_ratio, loss_chunk_rows=cfg.train.loss_chunk_rows)
    checkpoints = workdir / "lightning"
    whole = WholeWeights()
    callbacks = [
        *callbacks,
        whole,
        ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.train.checkpoint_every_n_steps),
    ]
    if run is not None:
        callbacks.append(MlflowCurves(run, every_n_steps=cfg.logger.log_every_n_steps))
    callbacks += configured_callbacks(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=configured_loggers(cfg) or False,
                                     plugins=[AtomicCheckpointIO()], default_root_dir=str(workdir))
    last = checkpoints / "last.ckpt"
    if last.exists():
        log.info("resuming training from %s", last)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    whole.restore(module)
    return module.model  # type: ignore[return-value]  # the model fit() was given
