"""The train stage: fit the LightningModule, resuming from the last checkpoint if there is one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.rag_examples import TrainingExample, encode_for_training
from ragforget.methods.base import Method
from ragforget.models.loading import attach_lora, load_model
from ragforget.tracking.curves import MlflowCurves
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.training.datamodule import RagDataModule
from ragforget.training.module import RagFineTuner
from ragforget.utils.instantiate import instantiate
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


def build_trainable_model(cfg: DictConfig, model_path: str) -> PreTrainedModel:
    """The starting model with fresh LoRA adapters, or all weights trainable when model.lora is null."""
    model = load_model(model_path, cfg.model.dtype).train()
    if cfg.model.get("lora"):
        return attach_lora(model, cfg.model.lora)
    model.requires_grad_(True)
    return model


def fit(cfg: DictConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: Method,
        examples: Sequence[TrainingExample], workdir: Path, run: TrackedRun | None) -> PreTrainedModel:
    """Train ``model`` in place with the method's loss terms and optimizer; returns it."""
    encoded = [encode_for_training(ex, tokenizer, cfg.model.chat_template) for ex in examples]
    datamodule = RagDataModule(encoded, cfg.train.batch_size, tokenizer.pad_token_id,
                               cfg.train.max_length, seed=cfg.seed)
    module = RagFineTuner(model, method, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                          warmup_ratio=cfg.train.warmup_ratio)
    checkpoints = workdir / "lightning"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.train.checkpoint_every_n_steps),
    ]
    if run is not None:
        callbacks.append(MlflowCurves(run, every_n_steps=cfg.logger.log_every_n_steps))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False,
                                                 default_root_dir=str(workdir))
    last = checkpoints / "last.ckpt"
    if last.exists():
        log.info("resuming training from %s", last)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    return module.model
