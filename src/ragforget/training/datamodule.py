"""Training batches from encoded examples (a list in memory: RAG training sets are small)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ragforget.data.encoding import Encoded, collate_for_training


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (a permutation per epoch from seed + epoch, this process's shard of it)
    that can resume mid-epoch: ``skip`` drops the first samples of the epoch ``resume_epoch``, the ones an
    interrupted run had already trained on. ``len`` stays the shard's full length, since Lightning
    counts the batches already done itself. Being a DistributedSampler, Lightning does not replace it.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0, resume_epoch: int = -1,
                 skip: int = 0) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True,  # type: ignore[arg-type]
                         seed=seed)  # a range is all a sampler reads: its length
        self.resume_epoch, self.skip = resume_epoch, skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:] if self.epoch == self.resume_epoch else indices)


class RagDataModule(L.LightningDataModule):
    """Shuffled, right-padded batches; the order is fixed by ``seed`` and survives a resume.

    Its state in a checkpoint is how far the current epoch got, so a resumed run continues with the
    next batch of the same permutation instead of restarting the epoch.
    """

    def __init__(self, examples: Sequence[Encoded], batch_size: int, pad_id: int,
                 max_length: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.examples = list(examples)
        self.batch_size = batch_size
        self.collate = partial(collate_for_training, pad_id=pad_id, max_length=max_length)
        self.seed = seed
        self.resume_epoch, self.batches_done = -1, 0

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableSampler(len(self.examples), self.seed, num_replicas=trainer.world_size if trainer else 1,
                                   rank=trainer.global_rank if trainer else 0, resume_epoch=self.resume_epoch,
                                   skip=self.batches_done * self.batch_size)
        # Its own generator: a DataLoader without one draws its base seed from the global RNG (which the
        # checkpoint restores for dropout) each time an epoch's iterator starts.
        return DataLoader(self.examples, batch_size=self.batch_size, sampler=sampler,  # type: ignore[arg-type]
                          collate_fn=self.collate, generator=torch.Generator().manual_seed(self.seed),
                          num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current  # type: ignore[union-attr]
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resume_epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
