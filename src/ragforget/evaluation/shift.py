"""Distribution shift: mean token-level KL(base || fine-tuned) on general prompts.

SelfAug's analysis finds this shift correlates with forgetting. For a LoRA model the base
distribution is the same module with adapters disabled; otherwise a separate base model is passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.encoding import collate_prompts
from ragforget.models.loading import has_adapters
from ragforget.utils.numerics import kl_rows


@torch.no_grad()
def distribution_shift(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                       base_model: PreTrainedModel | None = None, max_tokens: int = 256,
                       batch_size: int = 8) -> float:
    """Mean over all real tokens of KL(p_base || p_tuned) of the next-token distributions."""
    if base_model is None and not has_adapters(model):
        raise ValueError("a full fine-tuned model needs base_model to measure the shift against")
    model.eval()
    device = next(model.parameters()).device
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    ids = [x for x in ids if x]
    total, count = 0.0, 0
    for start in range(0, len(ids), batch_size):
        batch = {k: v.to(device) for k, v in collate_prompts(ids[start:start + batch_size],
                                                              tokenizer.pad_token_id).items()}
        tuned = model(**batch).logits
        if base_model is not None:
            base = base_model(**batch).logits
        else:
            with model.disable_adapter() if has_adapters(model) else nullcontext():  # type: ignore[operator]
                base = model(**batch).logits
        mask = batch["attention_mask"].bool()
        base_rows, tuned_rows = base[mask], tuned[mask]
        for row in range(0, base_rows.shape[0], 256):  # chunks keep the fp32 softmaxes small
            total += kl_rows(base_rows[row:row + 256], tuned_rows[row:row + 256]).sum().item()
        count += int(mask.sum())
    return total / max(count, 1)
