"""Exercises of the objectives, sampling, schedule, evaluation and tuning equations.

Each mutant is a typical mistake (its docstring's first line says which); each alternative is a correct solution
written differently from the library's. tests/test_exercises.py checks that the tests reject every mutant and pass
the reference and every alternative.

Docs: docs/course.md (the exercises), docs/transformer.md, docs/objectives.md, docs/generation.md, docs/training.md,
docs/tuning.md, docs/prompting.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.exercises.exercise import Exercise
from minilm.model.sampling import top_k_filter, top_p_filter
from minilm.tokenizer import MASK_ID, NUM_SPECIAL_TOKENS
from minilm.training.objectives import IGNORE_INDEX, causal_lm_loss

OBJECTIVES = "tests/test_objectives.py"
GENERATE = "tests/test_generate.py"


# ---- position ids ---------------------------------------------------------------------------------------------------
def positions_counting_padding(real: Tensor | None, start: Tensor, T: int) -> Tensor:
    """pos(t) = start + t: padding takes a position, so a left-padded row starts late."""
    return start[:, None] + torch.arange(T, device=start.device)


def positions_ignoring_start(real: Tensor | None, start: Tensor, T: int) -> Tensor:
    """start left out: after a KV cache the new tokens count again from 0."""
    if real is None:
        return torch.arange(T, device=start.device).expand(start.size(0), T)
    return (real.long().cumsum(dim=1) - 1).clamp(min=0)


def positions_counting_the_token_itself(real: Tensor | None, start: Tensor, T: int) -> Tensor:
    """|{s <= t : m_s = 1}| instead of s < t: the cumulative count without the - 1, so the first token is at 1."""
    if real is None:
        return start[:, None] + torch.arange(1, T + 1, device=start.device)
    return start[:, None] + real.long().cumsum(dim=1)


def positions_by_loop(real: Tensor | None, start: Tensor, T: int) -> Tensor:
    """Positions row by row: a counter that moves on at every real token (padding takes the counter's value)."""
    out = torch.zeros(start.size(0), T, dtype=torch.long, device=start.device)
    for b in range(start.size(0)):
        count = int(start[b])
        for t in range(T):
            out[b, t] = count
            if real is None or bool(real[b, t]):
                count += 1
    return out


# ---- BERT's masking rule --------------------------------------------------------------------------------------------
def mask_selecting_special_tokens(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """Every real position may be selected, [CLS] and [SEP] included (only the attention mask is checked)."""
    eligible = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    selected = eligible & (torch.rand(input_ids.shape, generator=generator) < mask_prob)
    action = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(selected & (action < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    corrupted = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, corrupted)
    return corrupted, torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def mask_always_with_mask_token(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """Every selected position becomes [MASK]: no 10% random tokens, no 10% left unchanged."""
    eligible = input_ids >= NUM_SPECIAL_TOKENS
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    selected = eligible & (torch.rand(input_ids.shape, generator=generator) < mask_prob)
    corrupted = torch.where(selected, torch.full_like(input_ids, MASK_ID), input_ids)
    return corrupted, torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def mask_random_tokens_from_the_whole_vocabulary(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """The 10% random tokens drawn from all vocab_size ids: special tokens ([PAD], [CLS], ...) get into the input."""
    eligible = input_ids >= NUM_SPECIAL_TOKENS
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    selected = eligible & (torch.rand(input_ids.shape, generator=generator) < mask_prob)
    action = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(0, vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(selected & (action < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    corrupted = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, corrupted)
    return corrupted, torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def mask_with_labels_everywhere(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """labels hold the original token at every position, not only at the selected ones."""
    eligible = input_ids >= NUM_SPECIAL_TOKENS
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    selected = eligible & (torch.rand(input_ids.shape, generator=generator) < mask_prob)
    action = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(selected & (action < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    corrupted = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, corrupted)
    return corrupted, input_ids.long().clone()


def mask_by_bernoulli_draws(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """The rule as three coin flips: selected (p), then [MASK] (0.8), then random (0.5 of the remaining 0.2)."""
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    eligible = input_ids >= NUM_SPECIAL_TOKENS
    if attention_mask is not None:
        eligible &= attention_mask.bool()

    def coin(p: float) -> Tensor:
        return torch.bernoulli(torch.full(input_ids.shape, p), generator=generator).bool()

    selected = eligible & coin(mask_prob)
    to_mask = selected & coin(0.8)
    to_random = selected & ~to_mask & coin(0.5)
    random_tokens = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, input_ids.shape, generator=generator)
    corrupted = input_ids.clone()
    corrupted[to_mask] = MASK_ID
    corrupted[to_random] = random_tokens[to_random].to(input_ids.dtype)
    labels = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    labels[selected] = input_ids[selected].long()
    return corrupted, labels


# ---- masked LM loss -------------------------------------------------------------------------------------------------
def masked_loss_over_every_position(logits: Tensor, labels: Tensor) -> Tensor:
    """The sum over the selected positions divided by all B T positions, not by |M|."""
    flat = logits.reshape(-1, logits.size(-1)).float()
    total = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / labels.numel()


def masked_loss_nan_when_nothing_is_selected(logits: Tensor, labels: Tensor) -> Tensor:
    """A plain mean over the selected positions: with none selected it is 0 / 0 = NaN."""
    flat = logits.reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX)


def masked_loss_summed(logits: Tensor, labels: Tensor) -> Tensor:
    """The sum over the selected positions, not their mean."""
    flat = logits.reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def masked_loss_by_gather(logits: Tensor, labels: Tensor) -> Tensor:
    """The loss from log_softmax and gather in float64, over the selected positions only."""
    selected = labels != IGNORE_INDEX
    log_p = torch.log_softmax(logits[selected].double(), dim=-1)
    nll = -log_p.gather(-1, labels[selected][:, None]).squeeze(-1)
    return (nll.sum() / selected.sum().clamp(min=1)).float()


# ---- temperature ----------------------------------------------------------------------------------------------------
def sample_times_temperature(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """z * tau instead of z / tau: a low temperature flattens the distribution instead of sharpening it."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits * temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator).squeeze(-1)


def sample_temperature_after_softmax(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """softmax(z) / tau: dividing the probabilities rescales them all alike, so the draw ignores the temperature."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1) / temperature
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_without_greedy(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """No greedy case: tau = 0 divides by zero (z / 0 is +-inf or NaN) instead of taking the argmax."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator).squeeze(-1)


def sample_ignoring_the_filters(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """top_k and top_p never applied: every token can be drawn."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), 1, generator=generator).squeeze(-1)


def sample_by_gumbel_max(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """The Gumbel-max trick: argmax_w (z_w / tau + g_w), g_w = -ln(-ln u_w), is a draw from softmax(z / tau)."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    z = logits.double() / temperature
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64, device=z.device).clamp(1e-300, 1 - 1e-16)
    return (z - torch.log(-torch.log(u))).argmax(dim=-1)


# ---- learning rate --------------------------------------------------------------------------------------------------
def learning_rate_warm_up_from_zero(step: int, config) -> float:
    """Warm-up eta_max t / W: the first step has rate 0 (the off-by-one of t + 1)."""
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * step / W
    min_lr = config.lr if config.min_lr is None else config.min_lr
    progress = min(1.0, (step - W) / max(1, S - W))
    return min_lr + (config.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_cosine_to_zero(step: int, config) -> float:
    """The cosine decays eta_max to 0, not to eta_min."""
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * (step + 1) / W
    progress = min(1.0, (step - W) / max(1, S - W))
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_none_decays_to_zero(step: int, config) -> float:
    """min_lr None read as 0: the rate decays to 0 instead of staying at the peak."""
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * (step + 1) / W
    min_lr = config.min_lr or 0.0
    progress = min(1.0, (step - W) / max(1, S - W))
    return min_lr + (config.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_cosine_over_all_steps(step: int, config) -> float:
    """The cosine's phase pi t / S from step 0, not pi (t - W) / (S - W) from the end of the warm-up."""
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * (step + 1) / W
    min_lr = config.lr if config.min_lr is None else config.min_lr
    progress = min(1.0, step / max(1, S))
    return min_lr + (config.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_by_cos_squared(step: int, config) -> float:
    """The decay written as eta_min + (eta_max - eta_min) cos^2(pi progress / 2), since (1 + cos 2a) / 2 = cos^2 a."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.min_lr is None:
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr + (config.lr - config.min_lr) * math.cos(math.pi * progress / 2) ** 2


# ---- bits per byte --------------------------------------------------------------------------------------------------
def bits_per_byte_in_nats(total_nll_nats: float, n_bytes: int) -> float:
    """Nats per byte: the division by ln 2 (nats to bits) left out."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one scored byte")
    return total_nll_nats / n_bytes


def bits_per_byte_times_ln_2(total_nll_nats: float, n_bytes: int) -> float:
    """Multiplied by ln 2 instead of divided: nats to bits the wrong way round."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one scored byte")
    return total_nll_nats * math.log(2) / n_bytes


def bits_per_byte_per_bit(total_nll_nats: float, n_bytes: int) -> float:
    """Divided by the 8 n_bytes bits of the text: bits per bit of UTF-8, not per byte."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one scored byte")
    return total_nll_nats / (math.log(2) * 8 * n_bytes)


def bits_per_byte_without_a_check(total_nll_nats: float, n_bytes: int) -> float:
    """No check of n_bytes: zero bytes is a ZeroDivisionError (or inf), not a clear error."""
    return total_nll_nats / (math.log(2) * n_bytes)


def bits_per_byte_by_log2_e(total_nll_nats: float, n_bytes: int) -> float:
    """Nats to bits as a multiplication by log2(e) = 1 / ln 2."""
    if n_bytes < 1:
        raise ValueError("bits per byte needs at least one scored byte")
    return total_nll_nats * math.log2(math.e) / n_bytes


# ---- LoRA -----------------------------------------------------------------------------------------------------------
def lora_scaled_by_alpha(self, x: Tensor) -> Tensor:
    """The update scaled by alpha instead of alpha / r."""
    return self.base(x) + self.alpha * ((x @ self.A.t()) @ self.B.t())


def lora_scaled_by_r_over_alpha(self, x: Tensor) -> Tensor:
    """The update scaled by r / alpha: the ratio upside down."""
    return self.base(x) + (self.r / self.alpha) * ((x @ self.A.t()) @ self.B.t())


def lora_without_the_bias(self, x: Tensor) -> Tensor:
    """x W^T + (alpha / r) x A^T B^T: the frozen layer's bias b left out."""
    return x @ self.base.weight.t() + self.scale * ((x @ self.A.t()) @ self.B.t())


def lora_update_alone(self, x: Tensor) -> Tensor:
    """Only the low-rank update, the frozen layer left out: the tuned model does not start at the base."""
    return self.scale * ((x @ self.A.t()) @ self.B.t()) + self.base.bias


def lora_by_merged_weight(self, x: Tensor) -> Tensor:
    """The layer with the merged weight W + (alpha / r) B A, built at every call (gradients still reach A and B)."""
    return F.linear(x, self.base.weight + (self.alpha / self.r) * (self.B @ self.A), self.base.bias)


# ---- instruction loss -----------------------------------------------------------------------------------------------
def instruction_loss_unshifted_output_mask(
    logits: Tensor,
    input_ids: Tensor,
    output_mask: Tensor,
    alpha: float = 1.0,
    output_only: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """L_align over the positions AT the output tokens: the mask is not shifted to the positions that predict them."""
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    targets[:, :-1] = input_ids[:, 1:]
    is_output = output_mask.bool() if attention_mask is None else output_mask.bool() & attention_mask.bool()
    align = F.cross_entropy(logits.flatten(0, 1).float(), targets.masked_fill(~is_output, IGNORE_INDEX).flatten())
    return align if output_only else causal_lm_loss(logits, input_ids, attention_mask) + alpha * align


def instruction_loss_summed_align(
    logits: Tensor,
    input_ids: Tensor,
    output_mask: Tensor,
    alpha: float = 1.0,
    output_only: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """L_align as a sum over the output tokens, not a mean: alpha's weight grows with the output's length."""
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    targets[:, :-1] = input_ids[:, 1:]
    is_output = output_mask.bool() if attention_mask is None else output_mask.bool() & attention_mask.bool()
    predicts_output = torch.cat([is_output[:, 1:], torch.zeros_like(is_output[:, :1])], dim=1)
    align = F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.masked_fill(~predicts_output, IGNORE_INDEX).flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return align if output_only else causal_lm_loss(logits, input_ids, attention_mask) + alpha * align


def instruction_loss_always_mixed(
    logits: Tensor,
    input_ids: Tensor,
    output_mask: Tensor,
    alpha: float = 1.0,
    output_only: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """output_only ignored: L_LM + alpha L_align always, so instruction tokens are learned too."""
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    targets[:, :-1] = input_ids[:, 1:]
    is_output = output_mask.bool() if attention_mask is None else output_mask.bool() & attention_mask.bool()
    predicts_output = torch.cat([is_output[:, 1:], torch.zeros_like(is_output[:, :1])], dim=1)
    flat_targets = targets.masked_fill(~predicts_output, IGNORE_INDEX).flatten()
    align = F.cross_entropy(logits.flatten(0, 1).float(), flat_targets, ignore_index=IGNORE_INDEX)
    return causal_lm_loss(logits, input_ids, attention_mask) + alpha * align


def instruction_loss_by_gather(
    logits: Tensor,
    input_ids: Tensor,
    output_mask: Tensor,
    alpha: float = 1.0,
    output_only: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Both terms from one table of per-pair losses in float64: -log p(x_{t+1} | x_<=t), t = 0 .. T-2."""
    if output_mask.shape != input_ids.shape:
        raise ValueError(f"output_mask {tuple(output_mask.shape)} does not match input_ids {tuple(input_ids.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    log_p = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    nll = -log_p.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    lm_pairs = (real[:, 1:] & real[:, :-1]).double()
    out_pairs = (output_mask.bool() & real)[:, 1:].double()
    align = (nll * out_pairs).sum() / out_pairs.sum().clamp(min=1)
    loss = align if output_only else (nll * lm_pairs).sum() / lm_pairs.sum().clamp(min=1) + alpha * align
    return loss.float()


EXERCISES = (
    Exercise(
        id="position-ids",
        target="minilm.model.masks:position_ids",
        docs="docs/transformer.md#embeddings",
        tests=(
            "tests/test_model.py::test_positions_count_only_real_tokens",
            "tests/test_model.py::test_padded_batch_equals_each_sequence_alone[left-causal-math]",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-no-prefix-math]",
        ),
        hints=(
            "Without a mask the positions are start, start + 1, ...: start[:, None] + arange(T).",
            "With a mask, a token's position is the number of real tokens before it: a cumulative sum minus 1.",
            "Add start (B,) to every row; padding before the first real token would get -1: clamp it at 0.",
        ),
        mutants=(positions_counting_padding, positions_ignoring_start, positions_counting_the_token_itself),
        alternatives=(positions_by_loop,),
    ),
    Exercise(
        id="mask-tokens",
        target="minilm.training.objectives:mask_tokens",
        docs="docs/objectives.md#berts-masking-rule",
        tests=(
            f"{OBJECTIVES}::test_masking_statistics_follow_the_bert_rule",
            f"{OBJECTIVES}::test_special_and_padding_tokens_are_never_selected",
            f"{OBJECTIVES}::test_masking_is_reproducible_from_the_seed",
        ),
        hints=(
            "Eligible positions: input_ids >= NUM_SPECIAL_TOKENS (no special token, no [PAD]) and attention_mask.",
            "Select an eligible position when a uniform draw (torch.rand with the generator) is below mask_prob.",
            "A second uniform draw picks the corruption: < 0.8 [MASK], < 0.9 a random token in "
            "[NUM_SPECIAL_TOKENS, vocab_size), else unchanged.",
            "labels are the original ids at the selected positions and IGNORE_INDEX everywhere else.",
        ),
        mutants=(
            mask_selecting_special_tokens,
            mask_always_with_mask_token,
            mask_random_tokens_from_the_whole_vocabulary,
            mask_with_labels_everywhere,
        ),
        alternatives=(mask_by_bernoulli_draws,),
    ),
    Exercise(
        id="masked-lm-loss",
        target="minilm.training.objectives:masked_lm_loss",
        docs="docs/objectives.md#masked-language-modelling-loss",
        tests=(
            f"{OBJECTIVES}::test_masked_lm_loss_counts_only_selected_positions",
            f"{OBJECTIVES}::test_masked_lm_loss_with_nothing_selected_is_zero_not_nan",
            f"{OBJECTIVES}::test_masked_loss_on_selected_positions_equals_the_loss_over_the_full_output_layer",
        ),
        hints=(
            "M is where labels != IGNORE_INDEX: take log_softmax of the logits there and pick the label's entry.",
            "Divide the sum by |M|, the number of selected positions, not by B T.",
            "With nothing selected return 0 that is still connected to the graph (logits.sum() * 0), not 0 / 0.",
        ),
        mutants=(masked_loss_over_every_position, masked_loss_nan_when_nothing_is_selected, masked_loss_summed),
        alternatives=(masked_loss_by_gather,),
    ),
    Exercise(
        id="temperature",
        target="minilm.model.sampling:sample_next_token",
        docs="docs/generation.md#temperature-and-greedy-decoding",
        tests=(
            f"{GENERATE}::test_temperature_zero_is_argmax",
            f"{GENERATE}::test_sampled_frequencies_follow_the_softmax_of_the_logits_over_the_temperature[0.5]",
            f"{GENERATE}::test_sampled_frequencies_follow_the_softmax_of_the_logits_over_the_temperature[2.0]",
            f"{GENERATE}::test_sampling_never_draws_a_filtered_token",
            f"{GENERATE}::test_cached_and_uncached_generation_agree[sampled]",
        ),
        hints=(
            "Where allowed is False set the logit to -inf first; temperature 0 is then the argmax of each row.",
            "Otherwise divide the logits by the temperature, then apply top_k_filter and top_p_filter when given.",
            "softmax the filtered logits and draw one token per row with torch.multinomial and the generator.",
        ),
        mutants=(
            sample_times_temperature,
            sample_temperature_after_softmax,
            sample_without_greedy,
            sample_ignoring_the_filters,
        ),
        alternatives=(sample_by_gumbel_max,),
    ),
    Exercise(
        id="learning-rate",
        target="minilm.training.optimizer:learning_rate",
        docs="docs/training.md#learning-rate-linear-warm-up-cosine-decay",
        tests=(
            "tests/test_trainer.py::test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_min_lr",
            "tests/test_trainer.py::test_learning_rate_without_min_lr_warms_up_then_stays_at_the_peak",
        ),
        hints=(
            "Step t counts from 0: during the warm-up the rate is lr (t + 1) / W, so step W - 1 reaches the peak.",
            "Then progress = (t - W) / (S - W), at most 1; the factor (1 + cos(pi progress)) / 2 goes from 1 to 0.",
            "min_lr None means no decay: the rate stays at lr (take min_lr = lr in the same formula).",
        ),
        mutants=(
            learning_rate_warm_up_from_zero,
            learning_rate_cosine_to_zero,
            learning_rate_none_decays_to_zero,
            learning_rate_cosine_over_all_steps,
        ),
        alternatives=(learning_rate_by_cos_squared,),
    ),
    Exercise(
        id="bits-per-byte",
        target="minilm.training.evaluate:bits_per_byte",
        docs="docs/training.md#evaluation-loss-perplexity-bits-per-byte",
        tests=(
            "tests/test_evaluate.py::test_bits_per_byte_converts_nats_to_bits_and_needs_bytes",
            "tests/test_evaluate.py::test_a_uniform_model_costs_log2_vocab_bits_per_token",
        ),
        hints=(
            "The losses are in nats (natural log); one bit is ln 2 nats: divide by ln 2.",
            "Divide by the number of UTF-8 bytes B of the scored tokens, not by the tokens.",
            "B = 0 gives no rate at all: raise a ValueError saying at least one scored byte is needed.",
        ),
        mutants=(bits_per_byte_in_nats, bits_per_byte_times_ln_2, bits_per_byte_per_bit, bits_per_byte_without_a_check),
        alternatives=(bits_per_byte_by_log2_e,),
    ),
    Exercise(
        id="lora",
        target="minilm.tuning.methods.lora:LoRALinear.forward",
        docs="docs/tuning.md#lora-hu-et-al-2021",
        tests=(
            "tests/test_tuning_paths.py::"
            "test_a_lora_layer_adds_alpha_over_r_times_the_low_rank_update_to_the_frozen_layer",
            "tests/test_tuning_paths.py::test_lora_starts_at_the_base_and_merging_keeps_its_outputs",
        ),
        hints=(
            "The method takes self: self.base is the frozen nn.Linear (W, b), self.A is (r, d_in), self.B (d_out, r).",
            "The low-rank update is x A^T B^T: (x @ self.A.t()) @ self.B.t() never builds a d_out x d_in matrix.",
            "Scale the update by alpha / r (self.scale) and add it to self.base(x), which includes the bias.",
        ),
        mutants=(lora_scaled_by_alpha, lora_scaled_by_r_over_alpha, lora_without_the_bias, lora_update_alone),
        alternatives=(lora_by_merged_weight,),
    ),
    Exercise(
        id="instruction-loss",
        target="minilm.training.objectives:instruction_loss",
        docs="docs/prompting.md#instruction-tuning-loss",
        tests=(
            "tests/test_instruction_loss.py::"
            "test_instruction_loss_equals_the_hand_computed_mix_of_whole_sequence_and_output_losses",
            "tests/test_instruction_loss.py::test_output_only_loss_gives_no_gradient_to_predictions_of_instruction_tokens",
            "tests/test_instruction_loss.py::test_with_alpha_the_instruction_tokens_are_learned_too",
        ),
        hints=(
            "L_LM is causal_lm_loss(logits, input_ids, attention_mask): call it.",
            "Position t predicts token t + 1: the label of position t is input_ids[:, t + 1], and it counts in L_align "
            "when token t + 1 is an output token (shift output_mask left by one).",
            "L_align is a mean over the output tokens; return it alone when output_only, else L_LM + alpha L_align.",
        ),
        mutants=(instruction_loss_unshifted_output_mask, instruction_loss_summed_align, instruction_loss_always_mixed),
        alternatives=(instruction_loss_by_gather,),
    ),
)
