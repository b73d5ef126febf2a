"""GateNetwork (LoRAven paper §4.1.2): per-token gates over blocks of rank components.

The paper builds ``num_blocks`` separate ``nn.Linear(in, 1)`` gates and concatenates their sigmoids;
one ``nn.Linear(in, num_blocks)`` is the same function with one GEMM instead of ``num_blocks``.
Rank component j belongs to block ``j * num_blocks // r_max``. The gate is ``2·sigmoid(·)`` with zero
init, i.e. exactly 1 at step 0, so enabling it never perturbs the model before training (the paper's
plain sigmoid would halve every component at init).
"""

from __future__ import annotations

import torch
from torch import nn


class GateNetwork(nn.Module):
    def __init__(self, in_features: int, num_blocks: int, r_max: int) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.proj = nn.Linear(in_features, num_blocks)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.register_buffer("block_of", torch.arange(r_max) * num_blocks // r_max, persistent=False)

    def forward(self, x: torch.Tensor, r: int | None = None) -> torch.Tensor:
        """Gates per rank component (…, r) (or per block (…, num_blocks) when ``r`` is None)."""
        g = 2.0 * torch.sigmoid(self.proj(x.to(self.proj.weight.dtype)))
        if r is None:
            return g
        return g.index_select(-1, self.block_of[:r])
