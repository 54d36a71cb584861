"""Training batches from encoded examples (a list in memory: RAG training sets are small)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from ragforget.data.encoding import Encoded, collate_for_training


class RagDataModule(L.LightningDataModule):
    """Shuffled, right-padded batches; the shuffle order is fixed by ``seed``."""

    def __init__(self, examples: Sequence[Encoded], batch_size: int, pad_id: int,
                 max_length: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.examples = list(examples)
        self.batch_size = batch_size
        self.collate = partial(collate_for_training, pad_id=pad_id, max_length=max_length)
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.examples, batch_size=self.batch_size, shuffle=True,  # type: ignore[arg-type]
                          collate_fn=self.collate, generator=generator, num_workers=0)
