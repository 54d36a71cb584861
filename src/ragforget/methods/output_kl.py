"""Output KL, LwF-style (Li & Hoiem, 2016): the KL on ANSWER positions, the ablation of SelfAug."""

from __future__ import annotations

import torch

from ragforget.methods.base import StepTensors
from ragforget.methods.losses import answer_positions
from ragforget.methods.selfaug import PositionKL


class OutputKL(PositionKL):
    """The KL over the positions whose next token is an answer token (those the NLL trains)."""

    def positions(self, step: StepTensors) -> torch.Tensor:
        return answer_positions(step.batch["labels"])
