"""DynamicLowRankLayer under torch.compile (CPU): rank changes in a bucket set don't recompile per step."""

import torch
import torch._dynamo
from torch import nn
from torch._dynamo.testing import CompileCounter

from loraven.adapters.loraven.layer import DynamicLowRankLayer


def test_compiled_layer_recompiles_at_most_once_per_bucket_rank():
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = DynamicLowRankLayer(nn.Linear(24, 16), r_max=8, r_init=8, mode="replace")
    counter = CompileCounter()
    compiled = torch.compile(layer, backend=counter)
    x = torch.randn(5, 24)
    schedule = [8, 8, 4, 4, 6, 8, 4, 6, 8, 4, 4, 6] * 2  # many changes among the buckets {4, 6, 8}
    for r in schedule:
        layer.set_rank(r)
        out = compiled(x)
        out.sum().backward()
        u, s, v = (t.detach() for t in layer.active_factors())
        ref = (x @ v) * s @ u.T + layer.bias.detach()
        assert torch.allclose(out, ref, atol=1e-5)
    changes = sum(a != b for a, b in zip(schedule, schedule[1:], strict=False))
    assert counter.frame_count <= 3 < changes  # ≤ one graph per distinct rank, not one per change
    torch._dynamo.reset()
