"""The course's GPT, as chapter 08 builds it by hand, kept here once for the chapters that use it as a tool.

* `CausalSelfAttention`, `Block`, `GPT`: a GPT-2-style decoder (learned positions, pre-norm blocks, weight tying),
  the same code as chapter 08's; `GPT.hidden` returns the final layer-norm output (what a classifier head reads).
* `RandomWindows`, `warmup_cosine`, `adamw`, `lm_step`: the language-model training recipe for `lib.fit`.
* `nats_per_char`: held-out cross-entropy per token, each token scored once (per character for a character model).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .train import autocast, native_bf16


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; with `cache` = (keys, values) of earlier positions, x is one new position."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cache: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        N, T, d = x.shape
        q, k, v = (t.view(N, T, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))
        if cache is not None:  # one new position attends to all earlier ones: no mask needed
            if T != 1:
                raise ValueError(f"with a cache, feed one new position at a time (got {T})")
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(N, T, d)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        a, cache = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), cache


class GPT(nn.Module):
    """A decoder-only transformer language model over `vocab_size` tokens, reading up to `context` positions."""

    def __init__(self, vocab_size: int, context: int, width: int, layers: int, heads: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: scale the layers that write into the residual stream by 1/√(2L)
            for layer in (block.attn.out, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, T, vocab) for token ids (N, T), T <= context."""
        return self.forward_cached(ids, None)[0]

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The final layer-norm output (N, T, width): what the output layer, or a classifier head, reads."""
        return self.ln(self._trunk(ids, None)[0])

    def forward_cached(self, ids: torch.Tensor, caches: list | None) -> tuple[torch.Tensor, list]:
        """Logits and the per-layer (keys, values); with `caches`, `ids` is the one position after them."""
        x, new_caches = self._trunk(ids, caches)
        return self.ln(x) @ self.tok.weight.T, new_caches  # weight tying: the output layer is the embedding

    def _trunk(self, ids: torch.Tensor, caches: list | None) -> tuple[torch.Tensor, list]:
        """Embeddings and blocks: the residual stream before the final layer norm."""
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, positions), got {tuple(ids.shape)}")
        start = 0 if caches is None else caches[0][0].shape[2]
        if start + ids.shape[1] > self.context:
            raise ValueError(f"at most {self.context} positions, got {start + ids.shape[1]}")
        x = self.drop(self.tok(ids) + self.pos(torch.arange(start, start + ids.shape[1], device=ids.device)))
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[i])
            new_caches.append(cache)
        return x, new_caches


class RandomWindows:
    """`steps` batches of random (input, target) windows from a token stream per pass; seeded, re-iterable."""

    def __init__(self, ids: torch.Tensor, context: int, batch_size: int, steps: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if len(ids) <= context:
            raise ValueError(f"the token stream ({len(ids)} tokens) must be longer than the context ({context})")
        self.ids, self.context, self.batch_size, self.steps, self.device = ids, context, batch_size, steps, device
        self.generator = torch.Generator().manual_seed(seed)  # lib.fit saves and restores it with a checkpoint

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            starts = torch.randint(0, len(self.ids) - self.context, (self.batch_size,), generator=self.generator)
            windows = self.ids[starts[:, None] + torch.arange(self.context + 1)].to(self.device)
            yield windows[:, :-1], windows[:, 1:]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate × (step / warmup) during warm-up, then a cosine from 1 down to 0.1."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on matrices and embeddings, none on biases and gains.

    Fused: one kernel updates every parameter (CPU, CUDA and MPS have it); 4-8 % faster per step on CPU here.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in trainable if p.dim() >= 2]
    others = [p for p in trainable if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                              {"params": others, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99), fused=True)


def lm_step(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
            clip: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """A `lib.fit` step for a language model: next-token cross-entropy, backward, clip, update, schedule."""
    device = next(model.parameters()).device
    mixed = autocast(device) if native_bf16(device) else contextlib.nullcontext()

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        with mixed:
            loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        return {"loss": loss.detach(), "grad_norm": norm.detach()}

    return step


@torch.no_grad()
def nats_per_char(model: nn.Module, ids: torch.Tensor, context: int, stride: int | None = None,
                  first_scored: int = 1, batch_size: int = 64) -> float:
    """Mean -ln p(x_t | up to `context` earlier tokens) over t >= `first_scored`, each token scored once.

    Windows of `context` tokens advance by `stride` (default: half a window, so each scored token has at least
    half a window of history); a window scores only the tokens that earlier windows have not. For a character
    model this is nats per character.
    """
    if len(ids) <= context:
        raise ValueError(f"need more than {context} tokens to score, got {len(ids)}")
    stride = stride or context // 2
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = list(range(0, len(ids) - context, stride))
    if starts[-1] + context < len(ids) - 1:
        starts.append(len(ids) - 1 - context)
    total, count, done = torch.zeros((), device=device), 0, first_scored  # tokens before `done` are scored
    for i in range(0, len(starts), batch_size):
        chunk = torch.tensor(starts[i : i + batch_size])
        windows = ids[chunk[:, None] + torch.arange(context + 1)].to(device)
        losses = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1).float(), windows[:, 1:].flatten(),
                                 reduction="none").view(len(chunk), context)
        for row, s in zip(losses, chunk.tolist(), strict=True):  # row j predicts token s + 1 + j
            skip = max(done - (s + 1), 0)
            total += row[skip:].sum()
            count += context - skip
            done = s + 1 + context
    model.train(was_training)
    assert count == len(ids) - first_scored, (count, len(ids))
    return total.item() / count
