"""Mixed-task batches: one frozen base serves rows that use different tasks' soft prompts and prefixes.

Row b of the batch uses task t(b). Its soft prompt P_t(b) (n_t vectors) is placed in front of its tokens
and its prefixes (m_t keys/values per layer) in front of every layer's keys. Shorter prompts and prefixes
are padded on the left with masked positions, which no query attends to and which take no position, so
every row computes exactly what it would alone:  f([P_t(b); x_b]) with prefix_t(b).
This is what makes prompt and prefix tuning cheap to serve: one copy of the base, many tasks.

Docs: docs/tuning.md (mixed-task batches).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minilm.model import Transformer
from minilm.tuning.methods.base import TuningMethod
from minilm.tuning.methods.prefix import PrefixTuning, split_layers


class TaskBank(nn.Module):
    """Several tasks' prompt/prefix methods over one base; `hidden_states` takes the task of every row."""

    def __init__(self, base: Transformer, methods: dict[str, TuningMethod]) -> None:
        super().__init__()
        for task, method in methods.items():
            if not method.mixable:
                raise ValueError(
                    f"task {task!r} uses {method.name!r}, which changes the base's weights; "
                    "only prompt, prompt-encoder and prefix methods can share a batch"
                )
        self.base = base
        self.methods = nn.ModuleDict(methods)

    def inputs(self, input_ids: Tensor, attention_mask: Tensor, tasks: list[str]) -> dict:
        """The model inputs of a mixed batch: inputs_embeds, attention_mask, prefix, prefix_mask, and each row's
        position offset (its task's: n behind a prefix started from an n-token text, else 0)."""
        B, device = input_ids.size(0), input_ids.device
        if len(tasks) != B:
            raise ValueError(f"{len(tasks)} task names for {B} rows: give one task per row")
        unknown = sorted(set(tasks) - set(self.methods))
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; this bank has {', '.join(self.methods)}")
        d, L = self.base.config.d_model, self.base.config.n_layers
        prompts = [self.methods[t].soft_prompt() for t in tasks]
        prefixes = [self.methods[t].prefixes() if isinstance(self.methods[t], PrefixTuning) else None for t in tasks]
        n = max((p.size(0) for p in prompts if p is not None), default=0)
        m = max((p.size(2) for p in prefixes if p is not None), default=0)

        embeds = self.base.tok_emb(input_ids)
        mask = attention_mask.bool()
        if n:
            rows = torch.zeros(B, n, d, device=device, dtype=embeds.dtype)
            rows_mask = torch.zeros(B, n, dtype=torch.bool, device=device)
            for b, p in enumerate(prompts):
                if p is not None:
                    rows[b, n - p.size(0) :] = p
                    rows_mask[b, n - p.size(0) :] = True
            embeds, mask = torch.cat([rows, embeds], dim=1), torch.cat([rows_mask, mask], dim=1)
        prefix, prefix_mask = None, None
        if m:
            stacked = torch.zeros(B, L, 2, m, d, device=device, dtype=embeds.dtype)
            prefix_mask = torch.zeros(B, m, dtype=torch.bool, device=device)
            for b, p in enumerate(prefixes):
                if p is not None:
                    stacked[b, :, :, m - p.size(2) :] = p
                    prefix_mask[b, m - p.size(2) :] = True
            prefix = split_layers(stacked, self.base.config.n_heads)
        offsets = torch.tensor([self.methods[t].position_offset for t in tasks], device=device)  # text-started prefixes
        return {
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "prefix": prefix,
            "prefix_mask": prefix_mask,
            "position_offset": offsets,
        }

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, tasks: list[str]) -> tuple[Tensor, Tensor]:
        """LN_f(h_L) over [padded prompts; tokens] and the mask of those positions."""
        inputs = self.inputs(input_ids, attention_mask, tasks)
        return self.base.hidden_states(**inputs), inputs["attention_mask"]

    def forward(self, input_ids: Tensor, attention_mask: Tensor, tasks: list[str]) -> Tensor:
        """LM logits of the token positions (B, T, V): each row as its own task's tuned model gives them."""
        inputs = self.inputs(input_ids, attention_mask, tasks)
        logits = self.base(**inputs)
        return logits[:, logits.size(1) - input_ids.size(1) :]
