"""torch.compile sees a pretraining step as one graph: no graph break, so no host sync inside the step.

The checks that read tensors on the host (the token-id range) stay in eager calls, where user input comes in; inside
torch.compile they run on the device (`torch._assert_async`). `backend="aot_eager"` traces forward and backward
exactly as torch.compile does but runs the ops eagerly, so these tests take seconds, not a compiler's minutes.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from conftest import random_ids, tiny_config

from minilm import Transformer
from minilm.training.objectives import mask_tokens
from minilm.training.trainer import PretrainingLoss


def pretraining_step(objective: str, attention: str, padded: bool) -> tuple[PretrainingLoss, dict[str, torch.Tensor]]:
    """The trainer's loss module in training mode (dropout on) and one batch for it."""
    config = tiny_config(causal=objective == "causal", attention=attention, dropout=0.1)
    loss_fn = PretrainingLoss(Transformer(config, seed=0).train(), objective)
    ids = random_ids(2, 16)
    mask = torch.ones_like(ids)
    if padded:
        mask[0, 11:] = 0
    batch = {"input_ids": ids, "attention_mask": mask if padded else None}
    if objective == "masked":
        batch["input_ids"], batch["labels"] = mask_tokens(
            ids, config.vocab_size, torch.Generator().manual_seed(0), mask
        )
    return loss_fn, batch


@pytest.mark.parametrize(
    "objective, attention, padded",
    [("causal", "sdpa", False), ("causal", "math", True), ("masked", "sdpa", True), ("masked", "math", False)],
)
def test_a_pretraining_step_is_one_graph_without_breaks(objective, attention, padded):
    """Dynamo's explain finds one graph and no break: no `.item()` on the ids, no branch on the labels, no tensor whose
    shape depends on the data (the masked loss computes every position's logits when compiled)."""
    loss_fn, batch = pretraining_step(objective, attention, padded)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(loss_fn)(**batch)
    reasons = [b.reason.splitlines()[0] for b in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count, reasons) == (1, 0, [])


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_the_compiled_step_computes_the_eager_loss_and_gradients(objective):
    """Compiled or not, the same loss and the same gradient of every parameter (dropout off, so both see the same
    function)."""
    eager, batch = pretraining_step(objective, "sdpa", padded=True)
    compiled_module, _ = pretraining_step(objective, "sdpa", padded=True)
    for module in (eager, compiled_module):
        module.model.drop.p = 0.0
        for block in module.model.blocks:
            block.drop.p = block.attn.dropout_p = 0.0
    torch._dynamo.reset()
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    loss, loss_compiled = eager(**batch), compiled(**batch)
    loss.backward()
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss)
    for (name, p), q in zip(eager.model.named_parameters(), compiled_module.model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_a_compiled_forward_still_refuses_token_ids_out_of_range():
    """The range check moves to the device inside torch.compile; it still stops a bad id (an eager call says which)."""
    model = Transformer(tiny_config(), seed=0).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    ids = random_ids(1, 8)
    torch.testing.assert_close(compiled(ids), model(ids))
    bad = ids.clone()
    bad[0, 3] = model.config.vocab_size
    with pytest.raises(RuntimeError, match="out of range for vocab_size=300"):
        compiled(bad)
    with pytest.raises(ValueError, match="token id 300 is out of range"):
        model(bad)
