"""Automatic discrete prompt search (AutoPrompt, Shin et al. 2020): trigger tokens chosen by the gradient of the
label loss, nothing trained.

    template      text with [T] markers, e.g. "{text} [T] [T] [T] It was": trigger j is one vocabulary token t_j
    L(t)          the mean cross-entropy of the verbalizer's label scores over a batch, with triggers t
    g_j           = dL / de_{t_j}, the gradient with respect to trigger j's input embedding
    first order   L(t_j <- w) - L(t) ~ (e_w - e_{t_j}) . g_j, for every token w at once: rank the vocabulary by -E g_j
    candidates    the K ordinary tokens (no special token) with the largest -e_w . g_j
    acceptance    the candidates and t_j re-scored on a fresh batch: t_j <- the best, if its loss is lower than t_j's

One trigger per iteration, in turn; every trigger starts as a neutral token. The gradient pass puts the placeholder
id V + j at trigger j (V = the vocabulary size), and `TriggerEmbeddings.embed` puts a leaf vector e_trig[j] = e_{t_j}
there, so autograd gives g_j wherever trigger j lands in each row. The base is in eval mode and frozen: no weight
changes, only token ids do.

A found prompt is a plain `VerbalizerReadout` with the trigger ids in its token sections, so scoring it is exactly
the tuned verbalizer path; `load_classifier` reads the folder `prompt-search` writes (prompt.json, search.jsonl) as a
tuned model whose method has no parameters, which `classify` and `compare` take like any other.

Docs: docs/prompting.md (automatic prompt search), docs/cli.md (the prompt-search folder).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.files import atomic_write, read_json
from minilm.model import Transformer
from minilm.outputs import OutputKind, check_output, claim_output
from minilm.prompting import DEFAULT_TEMPLATES, Template, Verbalizer
from minilm.settings import RUNS, check_fields, override, setting
from minilm.tokenizer import NUM_SPECIAL_TOKENS, Tokenizer
from minilm.training.device import resolve_device
from minilm.training.loop import LoopConfig
from minilm.training.run import INSTRUCT, PRETRAIN, load_run
from minilm.tuning.methods.base import TuningMethod
from minilm.tuning.readouts import VerbalizerReadout
from minilm.tuning.tasks import Example, Task, load_task
from minilm.tuning.trainer import evaluate
from minilm.tuning.tuned import TUNE, TunedModel, TunedRun, load_tuned, weights_sha256

TRIGGER = "[T]"
MARK = re.compile(r" ?\[T\]")
"""A trigger marker with the space before it: the trigger token carries its own space (" good")."""
LEADING_MARKS = re.compile(r"^(\[T\] ?)+")
FORMAT = 1
PROMPT_FILE, SEARCH_LOG = "prompt.json", "search.jsonl"
PROMPT_SEARCH = OutputKind(
    "prompt-search",
    "a searched prompt",
    (PROMPT_FILE, SEARCH_LOG, "eval-dev.json", "eval-test.json"),
    resumable=False,
)


@dataclass(frozen=True)
class SearchConfig:
    """How the trigger tokens are searched (AutoPrompt's K candidates, N iterations)."""

    candidates: int = setting(
        10, "candidates K per iteration: the top K of the first-order ranking, re-scored", check="positive"
    )
    iterations: int = setting(60, "iterations N, each updating one trigger (in turn)", check="positive")
    batch_size: int = setting(
        32, "train examples in the gradient batch and in the fresh batch that re-scores", check="positive"
    )
    triggers: int = setting(3, "[T] markers put right after {text} when no --template is given", check="positive")
    start_token: str = setting(".", "the neutral token every trigger starts as (one token of the base's tokenizer)")
    seed: int = setting(0, "seed of the batches", check="non_negative")
    device: str = override(LoopConfig, "device", LoopConfig.device)

    def __post_init__(self) -> None:
        check_fields(self)


# ---- the template with trigger slots ----------------------------------------------------------------------------
def with_triggers(template: str, n: int) -> str:
    """The default search template: n ` [T]` markers put right after {text} ("{text} It was" -> "{text} [T] [T] [T]
    It was")."""
    if template.count("{text}") != 1:
        raise ValueError(f"template {template!r} must have the field {{text}} exactly once to put triggers after it")
    return template.replace("{text}", "{text}" + f" {TRIGGER}" * n)


def without_triggers(template: str) -> str:
    """The hand-written template a search template extends: its [T] markers removed, each with the space before it
    (or after it, for markers that open the template)."""
    return MARK.sub("", LEADING_MARKS.sub("", template))


@dataclass(frozen=True)
class TriggerTemplate:
    """A template with trigger slots, tokenized: the token sections of a VerbalizerReadout (before the text, between
    the text and the slot, after the slot), holding the placeholder id V + j at trigger j."""

    text: str
    sections: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    text_prefix: str
    vocab_size: int
    n_triggers: int

    @classmethod
    def parse(cls, tokenizer: Tokenizer, template: str, vocab_size: int) -> TriggerTemplate:
        """Each literal piece between the markers tokenized on its own, one placeholder per [T]."""
        t = Template(template)
        if t.fields != ["text"]:
            raise ValueError(f"a search template has exactly one field, {{text}}; {template!r} has {t.fields}")
        if TRIGGER not in template:
            raise ValueError(
                f"--template {template!r} has no {TRIGGER}: put {TRIGGER} where a trigger token goes, "
                f"e.g. {with_triggers(without_triggers(template), 3)!r}"
            )
        sections: list[list[int]] = [[], [], []]
        part, text_prefix, j = 0, "", 0
        for kind, value in t.pieces():
            if kind == "literal":
                for i, chunk in enumerate(MARK.split(value)):
                    if i:
                        sections[part].append(vocab_size + j)
                        j += 1
                    if chunk:
                        sections[part] += tokenizer.encode(chunk)
            elif kind == "field":
                text_prefix, part = (" " if value.startswith(" ") else ""), max(part, 1)
            else:
                part = 2
        before, after, tail = (tuple(s) for s in sections)
        return cls(template, (before, after, tail), text_prefix, vocab_size, j)

    def filled(self, ids: Sequence[int] | None) -> list[list[int]]:
        """The sections with trigger j's placeholder replaced by ids[j] (None: the placeholders kept)."""
        if ids is None:
            return [list(s) for s in self.sections]
        return [[ids[t - self.vocab_size] if t >= self.vocab_size else t for t in s] for s in self.sections]

    def rendered(self, tokenizer: Tokenizer, ids: Sequence[int]) -> str:
        """The template as text with each marker replaced by its trigger token's text (ids are what count: a token's
        text need not tokenize back to the same id)."""
        pieces = MARK.split(self.text)
        return pieces[0] + "".join(tokenizer.decode([ids[j]]) + piece for j, piece in enumerate(pieces[1:]))

    def readout(
        self, words: Sequence[Sequence[Sequence[int]]], ids: Sequence[int] | None = None, text: str | None = None
    ) -> VerbalizerReadout:
        """The verbalizer readout with triggers `ids` (None: the placeholders, for the gradient pass)."""
        return VerbalizerReadout(text or self.text, *self.filled(ids), self.text_prefix, words)


class TriggerEmbeddings(TuningMethod):
    """A method without parameters: E[x], except at placeholder ids V + j, which get the vector e_trig[j]."""

    name = "prompt-search"

    def __init__(self, e_trig: Tensor | None = None) -> None:
        super().__init__()
        self.e_trig = e_trig  # (n, d), row j = trigger j's input embedding: a leaf that requires grad, or None

    def embed(self, base: Transformer, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """E[x] with e_trig[j] at every id V + j, and the mask unchanged (no position is added)."""
        V = base.tok_emb.weight.size(0)
        placeholder = input_ids >= V
        embeds = base.tok_emb(input_ids.masked_fill(placeholder, 0))
        if not bool(placeholder.any()):
            return embeds, mask
        if self.e_trig is None:
            raise ValueError(f"ids >= the vocabulary size {V} are trigger placeholders: give their vectors e_trig")
        vectors = self.e_trig[(input_ids - V).clamp(min=0)].to(embeds.dtype)
        return torch.where(placeholder.unsqueeze(-1), vectors, embeds), mask


# ---- one step of the search -------------------------------------------------------------------------------------
def label_loss(model: TunedModel, inputs: dict[str, Tensor], labels: Tensor) -> Tensor:
    """L = -(1/B) sum_b log softmax(s(x_b))_{y_b}: the mean cross-entropy of the label scores."""
    return F.cross_entropy(model(inputs["input_ids"], inputs["attention_mask"]).float(), labels)


def trigger_gradients(
    base: Transformer,
    template: TriggerTemplate,
    words: Sequence[Sequence[Sequence[int]]],
    ids: Sequence[int],
    inputs: dict[str, Tensor],
    labels: Tensor,
    base_sha256: str | None = None,
) -> tuple[Tensor, float]:
    """(g, L): g_j = dL / de_{t_j} for every trigger j, (n, d), and the loss L of the batch with triggers `ids`."""
    E = base.tok_emb.weight
    e_trig = E[torch.tensor(list(ids), device=E.device)].detach().clone().requires_grad_(True)
    model = TunedModel(base, TriggerEmbeddings(e_trig), template.readout(words), base_sha256=base_sha256)
    with torch.enable_grad():
        loss = label_loss(model, inputs, labels)
        (g,) = torch.autograd.grad(loss, e_trig)
    return g, loss.item()


def top_candidates(E: Tensor, g: Tensor, k: int) -> Tensor:
    """-E g: the k ids w with the largest -e_w . g (the lowest first-order loss estimate), no special token.

    E (V, d): the input embeddings; g (d,): the gradient at one trigger. L(w) - L(t) ~ (e_w - e_t) . g, so the best
    first-order replacement has the smallest e_w . g. The special tokens (ids below NUM_SPECIAL_TOKENS: [PAD], [MASK],
    ...) are never candidates. Returns (min(k, V - NUM_SPECIAL_TOKENS),) ids, best first.
    """
    scores = -(E @ g)
    scores[:NUM_SPECIAL_TOKENS] = float("-inf")
    return scores.topk(min(k, E.size(0) - NUM_SPECIAL_TOKENS)).indices


# ---- the search -------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The found triggers, where they started, and every iteration's record (search.jsonl's lines)."""

    template: TriggerTemplate
    words: tuple[tuple[tuple[int, ...], ...], ...]
    start_ids: list[int]
    trigger_ids: list[int]
    found_template: str
    trigger_tokens: list[str]
    history: list[dict[str, Any]]

    def readout(self, ids: Sequence[int] | None = None) -> VerbalizerReadout:
        """The found prompt's readout (or the one with triggers `ids`)."""
        return self.template.readout(self.words, self.trigger_ids if ids is None else ids, self.found_template)


def label_words_of(task: Task) -> list[str]:
    """The task.json label words in label order; a one-line error when it has none."""
    if not task.label_words:
        raise ValueError(
            f"task {task.name} has no label words (task.json label_words): the verbalizer needs one word per label"
        )
    return [task.label_words[label] for label in task.labels]


def start_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of the neutral start token; one line when it is not exactly one ordinary token."""
    ids = tokenizer.encode(token)
    if len(ids) != 1 or ids[0] < NUM_SPECIAL_TOKENS:
        raise ValueError(
            f"--start-token {token!r} is {len(ids)} token(s) {ids} for this tokenizer: give one ordinary token, "
            'e.g. "."'
        )
    return ids[0]


def search_prompt(
    base: Transformer,
    tokenizer: Tokenizer,
    task: Task,
    template: str,
    config: SearchConfig | None = None,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """AutoPrompt on the task's train split: the trigger tokens of `template` ([T] markers) that lower the label loss.

    Iteration i updates trigger j = i mod n: g_j on a batch, the top K of -E g_j, then those K and the current token
    scored on a fresh batch (both batches drawn with the seeded generator); the best is kept if it lowers the loss.
    The base (on its own device) is put in eval mode and frozen; its mode is restored at the end.
    """
    config = config or SearchConfig()
    words = Verbalizer.from_words(tokenizer, [[w] for w in label_words_of(task)]).words
    trig = TriggerTemplate.parse(tokenizer, template, base.config.vocab_size)
    if base.config.causal and trig.sections[2]:
        raise ValueError(
            f"template {template!r} has text after its answer slot, which a causal model cannot see: "
            "end the template at the slot"
        )
    ids = [start_id(tokenizer, config.start_token)] * trig.n_triggers
    start = list(ids)
    train = task.split("train")
    E = base.tok_emb.weight.detach()
    device = E.device
    generator = torch.Generator().manual_seed(config.seed)
    sha256 = weights_sha256(base)

    def scorer(trigger_ids: list[int]) -> TunedModel:
        return TunedModel(base, TriggerEmbeddings(), trig.readout(words, trigger_ids), base_sha256=sha256)

    probe = scorer(ids)  # encodes texts into the room this template leaves

    def batch() -> tuple[dict[str, Tensor], Tensor]:
        rows = torch.randperm(len(train), generator=generator)[: config.batch_size].tolist()
        chosen: list[Example] = [train[i] for i in rows]
        return probe.encode(tokenizer, [e.text for e in chosen]), torch.tensor([e.label for e in chosen], device=device)

    def loss_with(trigger_ids: list[int], inputs: dict[str, Tensor], labels: Tensor) -> float:
        with torch.no_grad():
            return label_loss(scorer(trigger_ids), inputs, labels).item()

    was_training = base.training
    base.eval()
    history: list[dict[str, Any]] = []
    began = time.perf_counter()
    try:
        for iteration in range(config.iterations):
            j = iteration % trig.n_triggers
            inputs, labels = batch()
            g, grad_loss = trigger_gradients(base, trig, words, ids, inputs, labels, sha256)
            with torch.no_grad():
                candidates = [w for w in top_candidates(E, g[j], config.candidates).tolist() if w != ids[j]]
            fresh, fresh_labels = batch()
            current = loss_with(ids, fresh, fresh_labels)
            scored = sorted((loss_with(ids[:j] + [w] + ids[j + 1 :], fresh, fresh_labels), w) for w in candidates)
            best_loss, best = scored[0] if scored else (current, ids[j])
            accepted = best_loss < current
            before = ids[j]
            if accepted:
                ids[j] = best
            history.append(
                {
                    "iteration": iteration + 1,
                    "trigger": j,
                    "gradient_batch_loss": grad_loss,
                    "loss": current,
                    "best_candidate": best,
                    "best_candidate_text": tokenizer.decode([best]),
                    "best_candidate_loss": best_loss,
                    "accepted": accepted,
                    "trigger_ids": list(ids),
                }
            )
            change = f"{tokenizer.decode([before])!r} -> {tokenizer.decode([best])!r}" if accepted else "kept"
            log(
                f"iteration {iteration + 1}/{config.iterations}, trigger {j}: fresh-batch loss {current:.4f}, best of "
                f"{len(candidates)} candidates {best_loss:.4f} ({change}) | {time.perf_counter() - began:.0f} s"
            )
    finally:
        base.train(was_training)
    return SearchResult(
        trig,
        words,
        start,
        list(ids),
        trig.rendered(tokenizer, ids),
        [tokenizer.decode([i]) for i in ids],
        history,
    )


# ---- the folder `prompt-search` writes, read back as a tuned model ----------------------------------------------
def default_folder(task_name: str) -> Path:
    """Where `prompt-search` writes without --out: runs/prompt-search-<task>."""
    return RUNS / f"prompt-search-{task_name}"


def search_template_for(template: str | None, task: Task, causal: bool, n_triggers: int) -> str:
    """--template, else the task.json template (else DEFAULT_TEMPLATES) with n [T] put right after {text}."""
    return template if template is not None else with_triggers(task.template or DEFAULT_TEMPLATES[causal], n_triggers)


def prompt_search_run(
    base: str,
    task_dir: str,
    out: str | None = None,
    template: str | None = None,
    config: SearchConfig | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`train.py prompt-search`: search the triggers of `template` on the task's train split, score the hand-written
    template (the markers removed), the start and the found prompt on dev, and write OUT/prompt.json and
    search.jsonl. Returns prompt.json's content."""
    config = config or SearchConfig()
    task = load_task(task_dir)
    folder = Path(out) if out else default_folder(task.name)
    check_output(
        folder,
        PROMPT_SEARCH,
        overwrite=overwrite,
        reads=[("--base", base), ("--task", task_dir)],
        known=[PRETRAIN, INSTRUCT, TUNE],
    )
    dev = task.split("dev")
    words = label_words_of(task)
    device = resolve_device(config.device)
    model, tokenizer, _ = load_run(base, "best", device)
    search_template = search_template_for(template, task, model.config.causal, config.triggers)
    hand = without_triggers(search_template)
    TriggerTemplate.parse(tokenizer, search_template, model.config.vocab_size)  # its mistakes before any log line
    start_id(tokenizer, config.start_token)
    sha256 = weights_sha256(model)
    log(
        f"prompt search on {base} ({'causal' if model.config.causal else 'masked'}, {model.num_parameters():,} "
        f"parameters), task {task.name}: template {search_template!r}, {config.iterations} iterations of "
        f"{config.candidates} candidates, batches of {config.batch_size}, start {config.start_token!r}, on {device}"
    )
    began = time.perf_counter()
    result = search_prompt(model, tokenizer, task, search_template, config, log)
    seconds = time.perf_counter() - began

    def dev_report(readout: VerbalizerReadout) -> dict[str, Any]:
        report = evaluate(TunedModel(model, TriggerEmbeddings(), readout, task.labels, sha256), tokenizer, dev)
        return {k: report[k] for k in ("accuracy", "macro_f1", "loss", "n")}

    hand_readout = VerbalizerReadout.from_template(tokenizer, hand, [[w] for w in words])
    reports = {
        "hand": dev_report(hand_readout),
        "start": dev_report(result.readout(result.start_ids)),
        "found": dev_report(result.readout()),
    }
    prompt = {
        "format": FORMAT,
        "hand_template": hand,
        "search_template": search_template,
        "found_template": result.found_template,
        "trigger_ids": result.trigger_ids,
        "trigger_tokens": result.trigger_tokens,
        "start_ids": result.start_ids,
        "readout": result.readout().metadata(),
        "labels": task.labels,
        "label_words": words,
        "base_run": str(Path(base).resolve()),
        "base_weights": "best",
        "weights_sha256": sha256,
        "task": str(Path(task_dir).resolve()),
        "dev": reports,
        "accepted": sum(h["accepted"] for h in result.history),
        "search_seconds": round(seconds, 1),
        "settings": {**dataclasses.asdict(config), "device": device},
    }
    claim_output(folder, PROMPT_SEARCH, fresh=True)  # only now that the search is done
    atomic_write(folder / SEARCH_LOG, "".join(json.dumps(h) + "\n" for h in result.history))
    atomic_write(folder / PROMPT_FILE, json.dumps(prompt, indent=2) + "\n")
    log(f"found {result.found_template!r} (trigger ids {result.trigger_ids}) in {seconds:.0f} s")
    for name, what in (("hand", repr(hand)), ("start", "the start"), ("found", "the found prompt")):
        r = reports[name]
        log(f"dev accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}: {what}")
    log(f"written to {folder / PROMPT_FILE} and {SEARCH_LOG}")
    log(f'classify a text: python train.py classify --from {folder} --text "..."')
    return prompt


def is_search(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a prompt written by `prompt-search` (prompt.json)."""
    return (Path(folder) / PROMPT_FILE).is_file()


def load_search(folder: str | os.PathLike[str], base_run: str | None = None, device: str = "auto") -> TunedRun:
    """The searched prompt as a TunedRun: its base run (recorded, or `base_run`), checked by the weights' SHA-256, read
    out by the found prompt through a method without parameters."""
    folder = Path(folder)
    meta = read_json(folder / PROMPT_FILE, "searched prompt")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{folder / PROMPT_FILE} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"this minilm reads format {FORMAT}"
        )
    run = base_run or meta["base_run"]
    if not base_run and not Path(run).is_dir():
        raise FileNotFoundError(
            f"the base run {run} recorded in {folder / PROMPT_FILE} does not exist (moved?): pass --base RUN_DIR"
        )
    base, tokenizer, _ = load_run(run, meta.get("base_weights", "best"), device)
    actual = weights_sha256(base)
    if actual != meta["weights_sha256"]:
        raise ValueError(
            f"{folder} was searched on a different base model (weights SHA-256 {meta['weights_sha256'][:12]}..., "
            f"this base has {actual[:12]}...): load it onto the base run it was searched on"
        )
    readout = VerbalizerReadout.from_metadata(meta["readout"])
    model = TunedModel(base, TriggerEmbeddings(), readout, meta["labels"], base_sha256=actual)
    return TunedRun(model.eval(), tokenizer, str(run))


def load_classifier(folder: str | os.PathLike[str], base_run: str | None = None, device: str = "auto") -> TunedRun:
    """What `classify --from` reads: a searched prompt (`load_search`) or a tuned model folder (`load_tuned`)."""
    return load_search(folder, base_run, device) if is_search(folder) else load_tuned(folder, base_run, device)
