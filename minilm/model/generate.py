"""Inference: continuing a prompt with a KV cache, filling in [MASK] tokens, and continuing text past the context.

`generate` draws one token at a time (minilm.model.sampling) and feeds only the new token through the model,
reusing the cached keys and values; `fill_mask` reads a masked model's predictions at each [MASK]; `complete` turns
text into text, restarting from the last half-context when a continuation outgrows the context. Given a
`Utf8Constraint` (minilm.model.utf8; `complete` always uses one) the drawn bytes are always valid UTF-8.

Docs: docs/generation.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minilm.model.kv_cache import KVCache
from minilm.model.masks import last_real_index
from minilm.model.sampling import sample_next_token
from minilm.model.transformer import Prefix, Transformer
from minilm.model.utf8 import Utf8Constraint
from minilm.tokenizer import CLS_ID, EOS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID, Tokenizer


def _check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def generate(
    model: Transformer,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    attention_mask: Tensor | None = None,
    prompt_embeds: Tensor | None = None,
    prefix: Prefix | None = None,
    prefix_mask: Tensor | None = None,
    position_offset: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = EOS_ID,
    seed: int = 0,
    use_cache: bool = True,
    utf8: Utf8Constraint | None = None,
) -> Tensor:
    """Continue each row of `input_ids` (B, T) by up to `max_new_tokens` tokens; returns (B, T + n).

    A row stops at `eos_id` (kept in the output) and is filled with [PAD] afterwards; generation
    ends when every row has stopped. Padding in the prompt (attention_mask 0) may sit on either
    side. With `use_cache` each step feeds only the new token and reuses the cached keys/values;
    without it each step recomputes the whole sequence (same logits, slower). `seed` makes the
    sampling reproducible. The model must be causal, and T + max_new_tokens must fit in max_len.

    Tuning methods enter here as in the model's forward: `prompt_embeds` (B or 1, n, d) are soft-prompt
    vectors placed before the prompt's tokens (they take n positions), `prefix` / `prefix_mask` are
    per-layer keys and values. Both are seen in the first step and live in the KV cache afterwards. `position_offset`
    starts the positions later (a prefix holding a text's keys and values puts the prompt behind that text's n
    positions); it counts against max_len too.

    With `utf8` (`Utf8Constraint.from_tokenizer(tokenizer, config.vocab_size)`) only tokens whose bytes continue each
    row as valid UTF-8 are drawn, greedy included; the state starts from the prompt's unfinished last character, if
    any. The output may still end inside a character when max_new_tokens runs out (`Utf8Constraint.text` drops it).
    """
    config = model.config
    if not config.causal:
        raise ValueError(
            "generate needs a causal model; this one is bidirectional (config.causal=False): use fill_mask"
        )
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    n_soft = 0 if prompt_embeds is None else prompt_embeds.size(1)
    taken = n_soft + position_offset  # positions before the prompt's first token
    if taken + T + max_new_tokens > config.max_len:
        soft = f" after {n_soft} soft-prompt vectors" if n_soft else ""
        if position_offset:
            soft += f"{' and' if n_soft else ' after'} {position_offset} offset positions (the prefix's text)"
        raise ValueError(
            f"the prompt has {T} tokens{soft} and max_new_tokens={max_new_tokens}, but the model's max_len is "
            f"{config.max_len}: shorten the prompt or ask for at most {max(config.max_len - taken - T, 0)} new tokens"
        )
    device = input_ids.device
    mask = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.to(device, torch.bool)
    )
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids is {tuple(input_ids.shape)}")
    if not mask.any(dim=1).all():
        raise ValueError("a prompt row has no real tokens (its attention_mask is all 0): give every row some text")
    if utf8 is not None and utf8.vocab_size != config.vocab_size:
        raise ValueError(
            f"the UTF-8 constraint covers {utf8.vocab_size} tokens but the model has {config.vocab_size}: build it "
            "with Utf8Constraint.from_tokenizer(tokenizer, model.config.vocab_size)"
        )
    generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()
    try:
        cache = KVCache(config.n_layers) if use_cache else None

        def whole_sequence(ids: Tensor, mask: Tensor, cache: KVCache | None) -> Tensor:
            """Logits of [soft prompt; ids] for the token positions."""
            first = {"prefix": prefix, "prefix_mask": prefix_mask, "cache": cache, "position_offset": position_offset}
            if prompt_embeds is None:
                return model(ids, attention_mask=mask, **first)
            soft = prompt_embeds.expand(B, -1, -1)
            embeds = torch.cat([soft, model.tok_emb(ids)], dim=1)
            full_mask = torch.cat([torch.ones(B, n_soft, dtype=torch.bool, device=device), mask], dim=1)
            out = model(inputs_embeds=embeds, attention_mask=full_mask, **first)
            return out[:, n_soft:]

        logits = whole_sequence(input_ids, mask, cache)
        next_logits = logits[torch.arange(B, device=device), last_real_index(mask)]
        ids, finished = input_ids, torch.zeros(B, dtype=torch.bool, device=device)
        if utf8 is not None:
            utf8 = utf8.to(device)
            state = utf8.start(input_ids, mask)
        for _ in range(max_new_tokens):
            allowed = None if utf8 is None else utf8.mask(state)
            token = sample_next_token(next_logits, temperature, top_k, top_p, generator, allowed)
            token = token.masked_fill(finished, PAD_ID)
            if utf8 is not None:
                state = utf8.advance(state, token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, ~finished[:, None]], dim=1)
            if eos_id is not None:
                finished = finished | (token == eos_id)
            if bool(finished.all()) or ids.size(1) == T + max_new_tokens:
                break
            if cache is not None:
                next_logits = model(token[:, None], attention_mask=mask[:, -1:], cache=cache)[:, -1]
            else:
                next_logits = whole_sequence(ids, mask, None)[:, -1]
        return ids
    finally:
        model.train(was_training)


@torch.no_grad()
def fill_mask(model: Transformer, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in `text`, the top_k most likely tokens with their probabilities p(w | x_\\M).

    The text is encoded as [CLS] text [SEP], the layout masked pretraining uses. Special tokens are
    never proposed.
    """
    if model.config.causal:
        raise ValueError(
            "fill_mask needs a masked (bidirectional) model, pretrained with --objective masked; this one is "
            "causal: use generate"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids = [CLS_ID, *tokenizer.encode(text), SEP_ID]
    if MASK_ID not in ids:
        raise ValueError("the text has no [MASK] token: write [MASK] where a token should be predicted")
    if len(ids) > model.config.max_len:
        raise ValueError(
            f"the text is {len(ids)} tokens long with [CLS]/[SEP], over the model's max_len={model.config.max_len}: "
            "shorten it"
        )
    device = model.tok_emb.weight.device
    input_ids = torch.tensor([ids], device=device)
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids)[0, input_ids[0] == MASK_ID]  # (number of masks, V)
    finally:
        model.train(was_training)
    logits[:, :NUM_SPECIAL_TOKENS] = float("-inf")
    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(top_k, probs.size(-1) - NUM_SPECIAL_TOKENS), dim=-1)
    return [
        [(tokenizer.decode([i]), float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
        for row_p, row_i in zip(top.values, top.indices)
    ]


def format_candidates(candidates: list[list[tuple[str, float]]]) -> str:
    """fill_mask's answer as lines: `[MASK] n: 'token' p  'token' p ...`."""
    return "\n".join(
        f"[MASK] {n}: " + "  ".join(f"{token!r} {p:.3f}" for token, p in row)
        for n, row in enumerate(candidates, start=1)
    )


def complete(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    *,
    temperature: float = 0.8,
    seed: int = 0,
    **options: Any,
) -> str:
    """`prompt` continued by up to `max_new_tokens` tokens, as text (`train.py generate`; its defaults are these).

    Past the context each round restarts from the last half-context of tokens, so a continuation may be longer than
    max_len. `options` go to `generate` (top_k, top_p, and a tuned model's prompt_embeds, prefix and position_offset);
    a soft prompt (prompt_embeds) and a position offset take positions of the context. Round r samples with
    seed + (the tokens so far).

    The text is always valid UTF-8: every round draws under the UTF-8 constraint, and if max_new_tokens runs out
    inside a character, that unfinished character's bytes are dropped (the text ends on the last whole character).
    """
    if not model.config.causal:
        raise ValueError("this is a masked (bidirectional) model, which cannot generate: use fill-mask")
    if not prompt:
        raise ValueError("the prompt is empty: give --prompt some text to continue")
    ids = tokenizer.encode(prompt)
    prompt_embeds = options.get("prompt_embeds")
    context = model.config.max_len - (0 if prompt_embeds is None else prompt_embeds.size(-2))
    context -= options.get("position_offset", 0)
    if len(ids) >= context:
        raise ValueError(
            f"the prompt is {len(ids)} tokens, but the model's context is {context}: shorten the prompt "
            f"to fewer than {context} tokens"
        )
    device = model.tok_emb.weight.device
    utf8 = Utf8Constraint.from_tokenizer(tokenizer, model.config.vocab_size)
    keep = max(context // 2, min(3, context - 1))  # 3 tokens hold the lead byte of an unfinished last character
    while max_new_tokens > 0:
        window = ids if len(ids) + max_new_tokens <= context or len(ids) <= keep else ids[-keep:]
        n = min(max_new_tokens, context - len(window))
        window_ids = torch.tensor([window], device=device)
        out = generate(model, window_ids, n, temperature=temperature, seed=seed + len(ids), utf8=utf8, **options)
        new = [t for t in out[0, len(window) :].tolist() if t != PAD_ID]
        ids, max_new_tokens = ids + new, max_new_tokens - n
        if len(new) < n:  # [EOS]
            break
    return utf8.text(ids)
