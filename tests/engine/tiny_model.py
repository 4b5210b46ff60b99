"""A one-parameter stand-in for a detector, shared by the training-loop tests: ``box = mean(images) * w``."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images):
        return SimpleNamespace(box=images.mean() * self.w, cls=None, obj=None, box_log_var=None)
