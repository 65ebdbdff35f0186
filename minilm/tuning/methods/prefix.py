"""Prefix tuning (Li & Liang 2021): trainable keys and values in front of every layer's K and V.

    K^l = [P_k^l; X W_K^l]    V^l = [P_v^l; X W_V^l]        P_k^l, P_v^l in R^{n x d}, split into h heads
    head_i = softmax(Q_i K_i^l^T / sqrt(d_k) + M) V_i^l     M: every real query sees all n prefix keys,
                                                            and the real keys causally (causal models)

While training, the prefixes come from a reparameterisation, which Li & Liang found necessary for
stable optimisation:

    [P_k^1, P_v^1, ..., P_k^L, P_v^L] = MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2     P' in R^{n x d'}

After training the MLP is folded away: the L x 2 x n x d numbers it produces are stored and are all
that inference needs. The MLP's tensors are saved as well, so training can resume from a checkpoint.
Prefixes take no positions: the real tokens keep positions 0, 1, ...

Docs: docs/tuning.md (prefix tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Prefix
from minilm.settings import check_fields, setting
from minilm.tuning.methods.base import Reparameterized


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

    def __post_init__(self) -> None:
        check_fields(self)


class PrefixMLP(nn.Module):
    """MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2, one row of P' (n, d') -> one position of all 2 L prefixes."""

    def __init__(self, prefix_len: int, n_layers: int, d_model: int, d_prime: int, hidden: int, seed: int) -> None:
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

    def forward(self) -> Tensor:
        """MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2 as (L, 2, n, d): out[l, 0] = P_k^l, out[l, 1] = P_v^l.

        Row i of MLP(P') (n, L 2 d) is position i of [P_k^1, P_v^1, ..., P_k^L, P_v^L] side by side, d numbers each.
        """
        rows = self.W_2(torch.tanh(self.W_1(self.P_prime)))  # (n, L * 2 * d)
        return rows.view(-1, *self.shape).permute(1, 2, 0, 3)


def split_layers(prefix: Tensor, n_heads: int) -> Prefix:
    """(..., L, 2, n, d) -> L pairs (prefix_k, prefix_v), each (B or 1, h, n, d_k)."""
    if prefix.dim() == 4:
        prefix = prefix.unsqueeze(0)
    B, L, _, n, d = prefix.shape
    heads = prefix.view(B, L, 2, n, n_heads, d // n_heads).transpose(3, 4)  # (B, L, 2, h, n, d_k)
    return [(heads[:, layer, 0], heads[:, layer, 1]) for layer in range(L)]


class PrefixTuning(Reparameterized):
    """Per-layer prefixes from `PrefixMLP` while training; the stored tensor `prefix` (L, 2, n, d) once folded."""

    name = "prefix"
    Settings = PrefixSettings
    mixable = True
    network_attr, output_attr = "mlp", "prefix"

    def __init__(self, settings: PrefixSettings | None, config: ModelConfig, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        self.n_layers, self.d_model, self.n_heads = config.n_layers, config.d_model, config.n_heads
        self.mlp: PrefixMLP | None = None
        self.register_parameter("prefix", None)
        mlp = self.new_network()
        if self.settings.reparameterize:
            self.mlp = mlp
        else:  # train the L x 2 x n x d numbers directly (start from what the MLP would give)
            with torch.no_grad():
                self.prefix = nn.Parameter(mlp().detach().clone())

    def new_network(self) -> PrefixMLP:
        s = self.settings
        return PrefixMLP(s.prefix_len, self.n_layers, self.d_model, s.d_prime, s.hidden, self.seed)

    def prefixes(self) -> Tensor:
        """(L, 2, n, d): MLP(P') while training, the stored tensor once folded."""
        return self.computed()

    def layer_prefix(self, batch_size: int) -> tuple[Prefix, Tensor | None]:
        return split_layers(self.prefixes(), self.n_heads), None
