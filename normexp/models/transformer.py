"""Transformers with a norm slot (Xiong et al. 2020, arXiv 2002.04745): a decoder-only language model and the
encoder–decoder translation model, built from Post-LN or Pre-LN blocks.

Norm position and final norm are two separate options (fairseq's ``normalize_before`` ties them together):

* ``position: post``: x ← Norm(x + F(x)) after every sub-layer (Vaswani et al. 2017; Xiong et al., Fig. 1a);
* ``position: pre``: x ← x + F(Norm(x)) (Xiong et al., Fig. 1b);
* ``final_norm: true``: one more norm after the last block of each stack, before the output projection. The
  paper's Pre-LN Transformer has it, its Post-LN Transformer does not
  (``normexp/configs/model/transformer_{post,pre}``).

The norm is any channels-last norm of the zoo (``norm=ln``, ``rms``, ``none``). Init as in the paper: Xavier-uniform
weights for every projection (q, k and v each as its own d×d matrix), zero biases, norm gains 1; token embeddings
N(0, 1/d) scaled by √d plus sinusoidal positions, as fairseq's Transformer. Blocks keep torch's parameter names
(``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``–``norm3``) and its dropout placement, so a
block loads the state dict of ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from normexp.data.translation import PAD
from normexp.errors import ConfigError
from normexp.norms import NormSpec

POSITIONS = ("post", "pre")


def xavier_linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    """A linear layer with Xavier-uniform weights and zero bias."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def xavier_attention(width: int, heads: int, dropout: float) -> nn.MultiheadAttention:
    """Multi-head attention whose q, k, v and output projections are each Xavier-uniform, biases zero.

    torch draws the stacked (3d, d) input projection as one matrix; the paper's init treats q, k and v apart.
    """
    attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
    with torch.no_grad():
        for projection in attention.in_proj_weight.chunk(3):
            nn.init.xavier_uniform_(projection)
        nn.init.xavier_uniform_(attention.out_proj.weight)
        nn.init.zeros_(attention.in_proj_bias)
        nn.init.zeros_(attention.out_proj.bias)
    return attention


def attend(attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor, **masks: Any) -> torch.Tensor:
    """``attention(query, keys, keys)`` without the attention weights (torch's faster path)."""
    return attention(query, keys, keys, need_weights=False, **masks)[0]


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """True above the diagonal: position t may not attend to positions after t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


class EncoderBlock(nn.Module):
    """A self-attention sub-layer and a ReLU FFN sub-layer, each with a residual connection and a norm placed by
    ``position``: ``torch.nn.TransformerEncoderLayer`` with ``norm_first = (position == "pre")``.

    With a causal mask it is the block of a decoder-only language model.
    """

    def __init__(
        self, width: int, heads: int, ffn: int, dropout: float, norm: NormSpec, position: str, where: str
    ) -> None:
        super().__init__()
        self.position = position
        self.self_attn = xavier_attention(width, heads, dropout)
        self.linear1 = xavier_linear(width, ffn)
        self.linear2 = xavier_linear(ffn, width)
        self.dropout = nn.Dropout(dropout)  # inside the FFN, as torch places it
        self.norm1 = norm.make(width, where=f"{where}.norm1", channels_last=True)
        self.norm2 = norm.make(width, where=f"{where}.norm2", channels_last=True)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def residual(self, x: torch.Tensor, norm: nn.Module, dropout: nn.Module, sublayer: Any) -> torch.Tensor:
        """Post-LN: Norm(x + Dropout(F(x))); Pre-LN: x + Dropout(F(Norm(x)))."""
        if self.position == "pre":
            return x + dropout(sublayer(norm(x)))
        return norm(x + dropout(sublayer(x)))

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        """W² Dropout(ReLU(W¹h + b¹)) + b²."""
        return self.linear2(self.dropout(torch.relu(self.linear1(h))))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, T, d) -> (N, T, d); ``attn_mask`` (T, T) True where attention is blocked, ``padding_mask`` (N, T)
        True at padding keys."""

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            return attend(self.self_attn, h, h, attn_mask=attn_mask, key_padding_mask=padding_mask)

        x = self.residual(x, self.norm1, self.dropout1, self_attention)
        return self.residual(x, self.norm2, self.dropout2, self.feed_forward)


class DecoderBlock(EncoderBlock):
    """Causal self-attention, attention over the encoder's output, and the FFN, each a residual sub-layer with a
    norm placed by ``position``: ``torch.nn.TransformerDecoderLayer`` with ``norm_first = (position == "pre")``."""

    def __init__(
        self, width: int, heads: int, ffn: int, dropout: float, norm: NormSpec, position: str, where: str
    ) -> None:
        super().__init__(width, heads, ffn, dropout, norm, position, where)
        self.multihead_attn = xavier_attention(width, heads, dropout)
        self.norm3 = norm.make(width, where=f"{where}.norm3", channels_last=True)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Target states (N, T, d) attending causally to themselves and to ``memory`` (N, S, d)."""
        mask = causal_mask(x.shape[1], x.device)

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            return attend(self.self_attn, h, h, attn_mask=mask)

        def cross_attention(h: torch.Tensor) -> torch.Tensor:
            return attend(self.multihead_attn, h, memory, key_padding_mask=memory_padding_mask)

        x = self.residual(x, self.norm1, self.dropout1, self_attention)
        x = self.residual(x, self.norm2, self.dropout2, cross_attention)
        return self.residual(x, self.norm3, self.dropout3, self.feed_forward)


class Embedding(nn.Module):
    """Token embedding N(0, 1/d) scaled by √d, plus sinusoidal positions (Vaswani et al. 2017), then dropout."""

    def __init__(self, vocab: int, width: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.scale = math.sqrt(width)
        self.tokens = nn.Embedding(vocab, width)
        nn.init.normal_(self.tokens.weight, std=width**-0.5)
        self.register_buffer("positions", sinusoids(max_len, width), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, T, d)."""
        return self.dropout(self.tokens(tokens) * self.scale + self.positions[: tokens.shape[1]])


def sinusoids(length: int, width: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d))."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def stack(block: type[EncoderBlock], cfg: Any, norm: NormSpec, where: str) -> nn.ModuleList:
    """``cfg.depth`` blocks named ``<where>.<i>``."""
    options = (cfg.width, cfg.heads, cfg.ffn, cfg.dropout, norm, cfg.position)
    return nn.ModuleList(block(*options, where=f"{where}.{i}") for i in range(cfg.depth))


def final_norm(cfg: Any, norm: NormSpec, where: str) -> nn.Module:
    """The norm after a stack's last block if ``cfg.final_norm``, else the identity."""
    return norm.make(cfg.width, where=where, channels_last=True) if cfg.final_norm else nn.Identity()


def output_projection(cfg: Any, embedding: Embedding, vocab: int) -> nn.Linear:
    """Logits from states: the embedding matrix if ``cfg.tie_embeddings`` (Press & Wolf 2017), else Xavier."""
    output = nn.Linear(cfg.width, vocab, bias=False)
    if cfg.tie_embeddings:
        output.weight = embedding.tokens.weight
    else:
        nn.init.xavier_uniform_(output.weight)
    return output


class TransformerLM(nn.Module):
    """Decoder-only language model: (N, T) token ids -> (N, T, vocab) next-token logits.

    Embedding, ``depth`` causal :class:`EncoderBlock`s, the final norm if ``final_norm``, the output projection.
    """

    def __init__(self, cfg: Any, norm: NormSpec, vocab: int, max_len: int) -> None:
        super().__init__()
        self.embedding = Embedding(vocab, cfg.width, max_len, cfg.dropout)
        self.layers = stack(EncoderBlock, cfg, norm, "layers")
        self.final_norm = final_norm(cfg, norm, "final_norm")
        self.output = output_projection(cfg, self.embedding, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position."""
        h = self.embedding(tokens)
        mask = causal_mask(tokens.shape[1], tokens.device)
        for layer in self.layers:
            h = layer(h, attn_mask=mask)
        return self.output(self.final_norm(h))


class TransformerSeq2Seq(nn.Module):
    """Encoder–decoder translation model (Vaswani et al. 2017) with one embedding for a joint vocabulary.

    Input (N, 2, L): row 0 the source, row 1 the target shifted right (BOS first), both padded with ``pad_id``;
    output (N, L, vocab) logits for the target. ``depth`` blocks in each stack (the paper's "6+6"); with
    ``final_norm`` each stack ends with a norm.
    """

    def __init__(self, cfg: Any, norm: NormSpec, vocab: int, max_len: int, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embedding = Embedding(vocab, cfg.width, max_len, cfg.dropout)
        self.encoder = stack(EncoderBlock, cfg, norm, "encoder")
        self.encoder_norm = final_norm(cfg, norm, "encoder_norm")
        self.decoder = stack(DecoderBlock, cfg, norm, "decoder")
        self.decoder_norm = final_norm(cfg, norm, "decoder_norm")
        self.output = output_projection(cfg, self.embedding, vocab)

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's output (N, S, d) and the source padding mask (N, S)."""
        padding = source == self.pad_id
        h = self.embedding(source)
        for layer in self.encoder:
            h = layer(h, padding_mask=padding)
        return self.encoder_norm(h), padding

    def decode(self, target: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Logits (N, T, vocab) of the next target token at each position of ``target`` (N, T)."""
        h = self.embedding(target)
        for layer in self.decoder:
            h = layer(h, memory, padding)
        return self.output(self.decoder_norm(h))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for the target of each (source, shifted target) pair."""
        memory, padding = self.encode(pair[:, 0])
        return self.decode(pair[:, 1], memory, padding)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, bos: int, eos: int, max_len: int) -> torch.Tensor:
        """Greedy decoding: (N, S) sources -> (N, ≤ max_len) token ids, BOS dropped, ``pad_id`` after EOS."""
        memory, padding = self.encode(source)
        out = torch.full((len(source), 1), bos, dtype=torch.long, device=source.device)
        done = torch.zeros(len(source), dtype=torch.bool, device=source.device)
        for _ in range(max_len):
            token = self.decode(out, memory, padding)[:, -1].argmax(-1)
            token = token.masked_fill(done, self.pad_id)
            out = torch.cat([out, token[:, None]], dim=1)
            done |= token == eos
            if done.all():
                break
        return out[:, 1:]


def _check(cfg: Any) -> None:
    if cfg.position not in POSITIONS:
        raise ConfigError(f"unknown model.position {cfg.position!r}.", choices=POSITIONS, fix="set model.position")
    if cfg.width % cfg.heads:
        raise ConfigError(
            f"model.width={cfg.width} is not divisible by model.heads={cfg.heads}.", fix="pick heads dividing width"
        )


def build_transformer_lm(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> TransformerLM:
    """Decoder-only Transformer LM (Post-LN or Pre-LN) for windows of ``input_shape = (T,)`` tokens."""
    _check(cfg)
    (length,) = input_shape
    return TransformerLM(cfg, norm, num_classes, length)


def build_transformer_seq2seq(
    cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int
) -> TransformerSeq2Seq:
    """Encoder-decoder Transformer (Post-LN or Pre-LN) for (source, target) pairs of ``input_shape = (2, L)``."""
    _check(cfg)
    _, length = input_shape
    return TransformerSeq2Seq(cfg, norm, num_classes, length, pad_id=PAD)
