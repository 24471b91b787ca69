"""The CUDA-graph train step gives the eager step's loss and gradients (GPU only)."""
import numpy as np
import pytest
import torch

from naics_pipeline.training.cuda_graphs import GraphedTrainLoss
from naics_pipeline.training.model import ModelConfig
from naics_pipeline.training.module import NaicsContrastive

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graphed_step_matches_the_eager_step():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, dim = 60, 8
    module = NaicsContrastive(model_cfg=ModelConfig(text_dim=dim, hidden_dim=16, embedding_dim=4).to_dict(),
                              learning_rate=1e-3, weight_decay=0.0, warmup_fraction=0.05,
                              channels=rng.normal(size=(n, 4, dim)).astype(np.float32), present=np.ones((n, 4), bool),
                              levels=rng.integers(2, 7, n)).cuda().eval()   # eval: no gating noise, same values
    batch = {"anchor": torch.arange(32, device="cuda"), "positive": torch.arange(32, device="cuda") + 1,
             "negatives": torch.randint(34, n, (32, 5), device="cuda")}

    def gradients(loss):
        module.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in module.model.parameters()]

    def eager():
        points, lb, _ = module.all_points()
        loss, parts = module.hierarchy_losses(points, lb, batch, train=True)
        return loss.detach(), {k: v.detach() for k, v in parts.items()}, gradients(loss)

    # Returned detached: capture fails while an eager autograd graph is still alive (torch's
    # AccumulateGrad stream check). In training the first capture comes before any backward.
    eager_loss, eager_parts, eager_grads = eager()
    graphed = GraphedTrainLoss(module)
    for _ in range(2):   # the call that captures, then a replay
        loss, parts = graphed(batch)
        assert torch.allclose(loss, eager_loss, rtol=1e-5)
        assert parts.keys() == eager_parts.keys()
        assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-7) for g, e in zip(gradients(loss), eager_grads))
    assert graphed.captured() == [((32,), (32,), (32, 5))]
