"""Prefix tuning (Li & Liang 2021): trainable keys and values in front of every layer's K and V.

    K^l = [P_k^l; X W_K^l]    V^l = [P_v^l; X W_V^l]        P_k^l, P_v^l in R^{n x d}, split into h heads
    head_i = softmax(Q_i K_i^l^T / sqrt(d_k) + M) V_i^l     M: every real query sees all n prefix keys,
                                                            and the real keys causally (causal models)

While training, the prefixes come from a reparameterisation, which Li & Liang found necessary for
stable optimisation:

    [P_k^1, P_v^1, ..., P_k^L, P_v^L] = P_0 + MLP(P'),   MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2     P' in R^{n x d'}

`init` chooses the start: random (P_0 = 0 and every weight drawn), zero (P_0 = 0, W_2 = b_2 = 0: every key and
value 0) or text:WORDS, the frozen base's own keys and values of those n words at their positions 0..n-1:

    P_0 = [K_t^1, V_t^1, ..., K_t^L, V_t^L],   K_t^l = X_t^l W_K^l, V_t^l = X_t^l W_V^l   (W_2 = b_2 = 0)

and the input's positions then start at n, as behind the text, so at step 0 a causal base computes exactly
base(text + input) at the input's positions. pretrained:DIR starts from the prefix tuned in DIR on the same base
(prompt pre-training): P_0 = its folded prefix, with its length and its position offset (W_2 = b_2 = 0 again: the
source's MLP is not carried over). With `--no-reparam` the prefixes train directly, from P_0.

After training the MLP is folded away: the L x 2 x n x d numbers P_0 + MLP(P') are stored and are all
that inference needs. The MLP's tensors (and P_0) are saved as well, so training can resume from a checkpoint.
Prefixes take no positions: the real tokens keep positions 0, 1, ... (n, n+1, ... after a text).

Docs: docs/tuning.md (prefix tuning).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Prefix, Transformer
from minilm.settings import check_fields, setting
from minilm.tokenizer import Tokenizer
from minilm.tuning.methods.base import Reparameterized, pretrained_folder
from minilm.tuning.methods.prompt import checked_start, pretrained_needs_start

INIT_HELP = (
    'prefix start: random (the MLP as drawn), zero (every key and value 0), text:"words" (the frozen base\'s own '
    "keys and values of those words, the input's positions after theirs; the prefix length becomes their token "
    "count), task (text: the task.json's prefix_text; random where the task has none) or pretrained:DIR (the "
    "prefix tuned in DIR on this base, its length and position offset too: prompt pre-training)"
)


def check_init(spec: str) -> str:
    """A prefix initialisation as written on the command line: random, zero, task, text:"some words" or
    pretrained:DIR."""
    if spec in ("random", "zero", "task") or (spec.startswith("text:") and spec[len("text:") :].strip()):
        return spec
    if (pretrained_folder(spec) or "").strip():
        return spec
    raise ValueError(
        f'unknown prefix initialisation {spec!r}: expected random, zero, task, text:"some words" or pretrained:DIR'
    )


def task_init(init: str, prefix_text: str | None) -> str:
    """init "task" as the start it stands for: text:<the task's prefix_text>, or "random" where the task has none;
    other inits as given. The tune command and `compare` resolve it, so tuned.json stores the text itself."""
    if init != "task":
        return init
    return "text:" + prefix_text if prefix_text and prefix_text.strip() else "random"


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix tuning's settings: its hyper-parameters in tuned.json and its flags."""

    prefix_len: int = setting(8, "keys and values per layer", check="positive", metavar="N")
    d_prime: int = setting(
        64, "width d' of the MLP's input rows P'", flag="--prefix-d-prime", check="positive", metavar="D"
    )
    hidden: int = setting(256, "hidden width of the MLP", flag="--prefix-hidden", check="positive", metavar="H")
    reparameterize: bool = setting(
        True, "train the prefixes directly, without the reparameterisation MLP", flag="--no-reparam"
    )
    init: str = setting("task", INIT_HELP, flag="--prefix-init", parse=check_init, metavar="INIT")
    offset: int = setting(
        0,
        "where the input's positions start: a text start's length, a pre-trained start's source's (set by the init)",
        check="non_negative",
        cli=False,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_init(self.init)

    @property
    def text(self) -> str | None:
        """The words of a text:WORDS start, else None."""
        return self.init[len("text:") :] if self.init.startswith("text:") else None

    @property
    def position_offset(self) -> int:
        """Where the input's positions start: n behind an n-token text start, else `offset` (0, or a pre-trained
        start's source's)."""
        return self.prefix_len if self.text is not None else self.offset


class PrefixMLP(nn.Module):
    """MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2, one row of P' (n, d') -> one position of all 2 L prefixes.

    from_zero: W_2 = b_2 = 0, so MLP(P') = 0 at step 0 (the prefix starts at P_0). with_start: a buffer P_0
    (L, 2, n, d) that the prefix is P_0 + MLP(P') of (a text's keys and values, or a pre-trained prefix;
    filled by `PrefixTuning.start_at`).
    """

    def __init__(
        self,
        prefix_len: int,
        n_layers: int,
        d_model: int,
        d_prime: int,
        hidden: int,
        seed: int,
        from_zero: bool = False,
        with_start: bool = False,
    ) -> None:
        super().__init__()
        self.shape = (n_layers, 2, d_model)
        g = torch.Generator().manual_seed(seed)
        self.P_prime = nn.Parameter(torch.randn(prefix_len, d_prime, generator=g))
        self.W_1 = nn.Linear(d_prime, hidden)
        self.W_2 = nn.Linear(hidden, n_layers * 2 * d_model)
        with torch.no_grad():
            nn.init.normal_(self.W_1.weight, 0.0, 1.0 / d_prime**0.5, generator=g)
            nn.init.zeros_(self.W_1.bias)
            nn.init.normal_(self.W_2.weight, 0.0, 1.0 / hidden**0.5, generator=g)
            nn.init.zeros_(self.W_2.bias)
            if from_zero:
                nn.init.zeros_(self.W_2.weight)
        self.register_buffer("P_0", torch.zeros(n_layers, 2, prefix_len, d_model) if with_start else None)

    def forward(self) -> Tensor:
        """MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2 as (L, 2, n, d): out[l, 0] = P_k^l, out[l, 1] = P_v^l.

        Row i of MLP(P') (n, L 2 d) is position i of [P_k^1, P_v^1, ..., P_k^L, P_v^L] side by side, d numbers each.
        """
        rows = self.W_2(torch.tanh(self.W_1(self.P_prime)))  # (n, L * 2 * d)
        return rows.view(-1, *self.shape).permute(1, 2, 0, 3)


@torch.no_grad()
def text_keys_values(base: Transformer, ids: Tensor) -> Tensor:
    """P_0[l] = (X^l W_K^l, X^l W_V^l) of the text ids (n,) at positions 0..n-1, every layer l: (L, 2, n, d).

    X^l = LN_1(h_{l-1}) is what layer l's attention projects, the base run on the text alone in eval mode (no
    dropout): exactly the keys and values a KV cache of the text holds, its h heads side by side in d numbers, as
    the prefix stores them (`split_layers` splits them again).
    """
    was_training = base.training
    base.eval()
    try:
        h, key_mask, _ = base.block_inputs(ids[None])  # h_0 = E[x] + P[0..n-1], (1, n, d)
        layers = []
        for block in base.blocks:
            _, k, v = block.attn.project(block.ln_1(h))  # (1, h, n, d_k) each
            layers.append(torch.stack([block.attn.merge_heads(k)[0], block.attn.merge_heads(v)[0]]))
            h = block(h, key_mask)
    finally:
        base.train(was_training)
    return torch.stack(layers).float()


def split_layers(prefix: Tensor, n_heads: int) -> Prefix:
    """(..., L, 2, n, d) -> L pairs (prefix_k, prefix_v), each (B or 1, h, n, d_k)."""
    if prefix.dim() == 4:
        prefix = prefix.unsqueeze(0)
    B, L, _, n, d = prefix.shape
    heads = prefix.view(B, L, 2, n, n_heads, d // n_heads).transpose(3, 4)  # (B, L, 2, h, n, d_k)
    return [(heads[:, layer, 0], heads[:, layer, 1]) for layer in range(L)]


class PrefixTuning(Reparameterized):
    """Per-layer prefixes P_0 + `PrefixMLP` while training; the stored tensor `prefix` (L, 2, n, d) once folded."""

    name = "prefix"
    Settings = PrefixSettings
    network_attr, output_attr = "mlp", "prefix"
    mixable = True

    def __init__(self, settings: PrefixSettings | None, config: ModelConfig, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        self.n_layers, self.d_model, self.n_heads = config.n_layers, config.d_model, config.n_heads
        self.max_len = config.max_len
        self.mlp: PrefixMLP | None = None
        self.register_parameter("prefix", None)
        self.build()

    def build(self) -> None:
        """Fresh tensors for the settings: the MLP, or with --no-reparam the prefixes it starts from (P_0 = 0 here)."""
        mlp = self.new_network()
        if self.settings.reparameterize:
            self.mlp = mlp
        else:  # train the L x 2 x n x d numbers directly, from what the MLP gives (0 unless random; then + P_0)
            with torch.no_grad():
                self.prefix = nn.Parameter(mlp().detach().clone())

    def new_network(self) -> PrefixMLP:
        s = self.settings
        return PrefixMLP(
            s.prefix_len,
            self.n_layers,
            self.d_model,
            s.d_prime,
            s.hidden,
            self.seed,
            from_zero=task_init(s.init, None) != "random",
            with_start=s.text is not None or pretrained_folder(s.init) is not None,
        )

    def initialize(self, base: Transformer, tokenizer: Tokenizer | None) -> None:
        """For text:WORDS, P_0 = `text_keys_values` of the words; the prefix length becomes their token count n.
        pretrained:DIR is given as a tensor (`start_at`)."""
        if pretrained_folder(self.settings.init) is not None:
            raise ValueError(pretrained_needs_start(self.settings.init))
        text = self.settings.text
        if text is None:
            return
        if tokenizer is None:
            raise ValueError('--prefix-init text:"..." needs the base\'s tokenizer to read the words')
        ids = tokenizer.encode(text)
        if not 1 <= len(ids) < self.max_len:
            raise ValueError(
                f"--prefix-init text: the words are {len(ids)} tokens; the base's context is {self.max_len}: give "
                f"1 to {self.max_len - 1} tokens, so the input fits behind them"
            )
        self.start_at(text_keys_values(base, torch.tensor(ids, device=base.tok_emb.weight.device)))
        self.settings = dataclasses.replace(self.settings, offset=len(ids))  # what tuned.json then stores

    def start_at(self, start: Tensor) -> None:
        """P_0 = start (L, 2, n, d): a text's keys and values, or a pre-trained prefix's folded P*_source. The prefix
        length becomes the start's n (it is what tuned.json then stores)."""
        n = start.size(2) if start.dim() == 4 else self.settings.prefix_len
        if n != self.settings.prefix_len:
            self.settings = dataclasses.replace(self.settings, prefix_len=n)
            self.build()
        with torch.no_grad():
            P_0 = self.mlp.P_0 if self.mlp is not None else self.prefix
            if P_0 is None:
                raise ValueError(f"a prefix with --prefix-init {self.settings.init} has no P_0: build it with a start")
            P_0.copy_(checked_start(start, tuple(P_0.shape), "prefix").to(P_0.device))

    @property
    def position_offset(self) -> int:
        """Where the input's positions start (`PrefixSettings.position_offset`): n behind an n-token text (the input
        sits behind the text), a pre-trained prefix's source's, else 0."""
        return self.settings.position_offset

    def computed(self) -> Tensor:
        """P_0 + MLP(P') while training (no P_0 unless started from a text or a pre-trained prefix), the stored
        tensor once folded."""
        if self.mlp is None:
            return self.prefix
        return self.mlp() if self.mlp.P_0 is None else self.mlp.P_0 + self.mlp()

    def prefixes(self) -> Tensor:
        """(L, 2, n, d): P_0 + MLP(P') while training, the stored tensor once folded."""
        return self.computed()

    def layer_prefix(self, batch_size: int) -> tuple[Prefix, Tensor | None]:
        return split_layers(self.prefixes(), self.n_heads), None
