"""LightweightScorer (LoRAven paper §3.2.1): in→32→1 sigmoid on the batch mean of the layer input.

The paper does not say how the scorer is trained. Our interpretation: it is trained *online*, with its own
tiny Adam optimizer on detached inputs (never part of the model's optimizer or graph), to regress an
observable complexity target, the normalised spectral entropy of the batch's token matrix
(``spectral_entropy`` of the centred rows: 0 when all tokens vary along one direction, → 1 for
isotropic inputs). Targets are
computed from a small row sample at decision steps only; the scorer then predicts complexity from the
batch mean alone (cheap enough for inference, where no SVD can be afforded). Its feature is the batch mean
divided by the batch RMS, so the score does not depend on the activation scale.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn


def spectral_entropy(rows: torch.Tensor) -> torch.Tensor:
    """Normalised spectral entropy H(p)/log(k), p_i = σ_i²/Σσ², of the centred (N × d) matrix; 0-d tensor.

    Centred, because the mean is one direction shared by all rows (the scorer's own input), not variety.
    """
    rows = rows.float()
    s = torch.linalg.svdvals(rows - rows.mean(0, keepdim=True))
    k = s.numel()
    if k < 2:
        return s.new_zeros(())
    p = s.pow(2)
    p = p / p.sum().clamp_min(1e-12)
    h = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return h / torch.log(torch.tensor(float(k)))


class LightweightScorer(nn.Module):
    """The paper's scorer network, verbatim: Linear(in, 32) → ReLU → Linear(32, 1) → Sigmoid."""

    def __init__(self, in_features: int, hidden_dim: int = 32) -> None:
        super().__init__()
        self.scorer = nn.Sequential(
            nn.Linear(in_features, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score of a batch (N × in) via its mean, or of an already-averaged feature vector (in,)."""
        feat = x.mean(dim=0, keepdim=True) if x.dim() > 1 else x.unsqueeze(0)
        return self.scorer(feat).squeeze()


class ScorerBank:
    """One LightweightScorer per layer, trained together: a summed MSE and one Adam step per iteration.

    The scorers share no parameters, so summing their losses gives each exactly its own gradient, and Adam
    is element-wise: this equals per-layer optimizers at a fraction of the Python overhead. Each scorer
    keeps a replay buffer of its last ``buffer`` (feature, target) pairs.
    """

    def __init__(
        self,
        in_features: dict[str, int],
        device: torch.device,
        lr: float = 1e-2,
        steps: int = 4,
        buffer: int = 32,
        seed: int = 0,
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nets = {name: LightweightScorer(d).to(device) for name, d in in_features.items()}
        params = [p for net in self.nets.values() for p in net.parameters()]
        self.opt = torch.optim.Adam(params, lr=lr) if params else None
        self.steps = steps
        self.feats = {name: deque(maxlen=buffer) for name in self.nets}
        self.targets = {name: deque(maxlen=buffer) for name in self.nets}
        self.updates = 0

    def update(self, features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add one pair per named layer, take ``steps`` Adam steps; return the new predictions (0-d)."""
        for name, f in features.items():
            self.feats[name].append(f.detach().float())
            self.targets[name].append(targets[name].detach().float().reshape(()))
        batches = {n: (torch.stack(list(self.feats[n])), torch.stack(list(self.targets[n]))) for n in features}
        with torch.enable_grad():
            for _ in range(self.steps):
                self.opt.zero_grad(set_to_none=True)
                loss = sum(
                    torch.nn.functional.mse_loss(self.nets[n].scorer(x).squeeze(-1), y) for n, (x, y) in batches.items()
                )
                loss.backward()
                self.opt.step()
        self.updates += 1
        with torch.no_grad():
            return {n: self.nets[n](features[n].float()) for n in features}
