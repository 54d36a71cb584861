"""The causal LM as a bi-encoder: pooled, normalized hidden states of queries and passages.

Only the transformer backbone runs (no LM head), so encoding costs no [B, T, vocab] logits. With a
PEFT model the active adapter (the retriever's) is what encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from ragforget.invar.pooling import POOLINGS, Pooling, pool


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack of a causal LM (PEFT-wrapped or not), which returns last hidden states."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    return cast(nn.Module, inner.base_model)  # transformers' PreTrainedModel.base_model: e.g. LlamaModel


class LLMEncoder:
    """Texts -> [N, H] embeddings; queries and passages get their own instruction prefix."""

    def __init__(self, model: nn.Module, tokenizer: Any, pooling: Pooling = "last", max_length: int = 128,
                 query_prefix: str = "Query: ", passage_prefix: str = "Passage: ") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = int(max_length)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings with gradients (training). Right padding: the mask finds each last token."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        hidden = backbone(self.model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return pool(hidden.last_hidden_state, batch["attention_mask"], self.pooling)

    def queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed([self.query_prefix + t for t in texts])

    def passages(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed([self.passage_prefix + t for t in texts])

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: str, batch_size: int = 32, desc: str = "encode") -> torch.Tensor:
        """Embeddings without gradients, in batches (indexing the corpus, searching)."""
        self.model.eval()
        embed = self.queries if kind == "query" else self.passages
        chunks = [embed(texts[i:i + batch_size]).cpu() for i in tqdm(range(0, len(texts), batch_size),
                                                                    desc=desc, leave=False)]
        return torch.cat(chunks) if chunks else torch.zeros(0, 0)
