"""The Transformer of Xiong et al. (2020): our Post-LN/Pre-LN blocks against torch's reference layers given the same
weights, the paper's init, the separate final-norm option, causality, and the translation model's masking."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from normexp import models
from normexp.data.translation import BOS, EOS, PAD
from normexp.models.transformer import DecoderBlock, EncoderBlock, TransformerLM, TransformerSeq2Seq, sinusoids
from normexp.norms import NormSpec

WIDTH, HEADS, FFN = 16, 4, 32


def model_cfg(**options) -> OmegaConf:
    base = {
        "position": "post",
        "final_norm": False,
        "depth": 2,
        "width": WIDTH,
        "heads": HEADS,
        "ffn": FFN,
        "dropout": 0.0,
        "tie_embeddings": False,
    }
    return OmegaConf.create(base | options)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_encoder_block_equals_torch_encoder_layer_with_the_same_weights(position: str) -> None:
    torch.manual_seed(0)
    ours = EncoderBlock(WIDTH, HEADS, FFN, 0.0, NormSpec.parse("ln"), position, where="block")
    reference = nn.TransformerEncoderLayer(
        WIDTH, HEADS, FFN, dropout=0.0, batch_first=True, norm_first=position == "pre"
    )
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, WIDTH)
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)
    for mode in (True, False):  # train mode (torch's plain path) and eval mode (its fused fast path)
        ours.train(mode), reference.train(mode)
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x, attn_mask=mask), reference(x, src_mask=mask), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_decoder_block_equals_torch_decoder_layer_with_the_same_weights(position: str) -> None:
    torch.manual_seed(0)
    ours = DecoderBlock(WIDTH, HEADS, FFN, 0.0, NormSpec.parse("ln"), position, where="block")
    reference = nn.TransformerDecoderLayer(
        WIDTH, HEADS, FFN, dropout=0.0, batch_first=True, norm_first=position == "pre"
    )
    reference.load_state_dict(ours.state_dict())
    x, memory = torch.randn(3, 5, WIDTH), torch.randn(3, 6, WIDTH)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[0, 4:] = True
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    expected = reference(x, memory, tgt_mask=causal, memory_key_padding_mask=padding)
    torch.testing.assert_close(ours(x, memory, padding), expected, atol=1e-5, rtol=1e-4)


def test_post_and_pre_place_the_norm_as_the_paper_writes_them() -> None:
    """Post-LN: x ← LN(x + F(x)); Pre-LN: x ← x + F(LN(x)), by hand with F the FFN sub-layer."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, WIDTH)
    for position in ("post", "pre"):
        block = EncoderBlock(WIDTH, HEADS, FFN, 0.0, NormSpec.parse("ln"), position, where="block")

        def ffn(h: torch.Tensor, block: EncoderBlock = block) -> torch.Tensor:
            return block.linear2(torch.relu(block.linear1(h)))

        def ln(h: torch.Tensor) -> torch.Tensor:
            return (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)

        expected = ln(x + ffn(x)) if position == "post" else x + ffn(ln(x))
        torch.testing.assert_close(block.residual(x, block.norm2, nn.Identity(), block.feed_forward), expected)


def test_xavier_init_for_q_k_v_each_zero_biases_unit_gains() -> None:
    torch.manual_seed(0)
    width = 256
    block = EncoderBlock(width, 4, 512, 0.0, NormSpec.parse("ln"), "post", where="block")
    xavier_std = math.sqrt(2 / (width + width))  # uniform(±a) with a = sqrt(6 / (fan_in + fan_out))
    for projection in block.self_attn.in_proj_weight.chunk(3):
        assert projection.std().item() == pytest.approx(xavier_std, rel=0.03)
        assert projection.abs().max().item() <= math.sqrt(3) * xavier_std + 1e-6
    assert block.linear1.weight.std().item() == pytest.approx(math.sqrt(2 / (width + 512)), rel=0.03)
    for bias in (block.self_attn.in_proj_bias, block.self_attn.out_proj.bias, block.linear1.bias, block.linear2.bias):
        assert torch.all(bias == 0)
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm1.bias == 0)


def test_final_norm_is_its_own_option_independent_of_the_position() -> None:
    for position in ("post", "pre"):
        for final in (False, True):
            model = TransformerLM(model_cfg(position=position, final_norm=final), NormSpec.parse("ln"), 50, 8)
            assert isinstance(model.final_norm, nn.LayerNorm) is final
            assert all(layer.position == position for layer in model.layers)


def test_paper_architectures_from_config(compose) -> None:
    post = compose("model=transformer_post", "data=text")
    pre = compose("model=transformer_pre", "data=text")
    assert (post.model.position, post.model.final_norm) == ("post", False)
    assert (pre.model.position, pre.model.final_norm) == ("pre", True)


def test_rms_norm_from_the_zoo_fills_every_norm_slot(compose) -> None:
    cfg = compose("model=transformer_pre", "norm=rms", "data=text")
    model = models.from_config(cfg, (8,), 256)
    slots = [model.final_norm, *(m for layer in model.layers for m in (layer.norm1, layer.norm2))]
    assert all(type(m).__name__ == "RMSNorm" and m.channels_last for m in slots)


def test_language_model_is_causal() -> None:
    torch.manual_seed(0)
    model = TransformerLM(model_cfg(position="pre", final_norm=True), NormSpec.parse("ln"), 50, 10).eval()
    tokens = torch.randint(50, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50
    logits, logits_changed = model(tokens), model(changed)
    assert logits.shape == (2, 10, 50)
    torch.testing.assert_close(logits[:, :6], logits_changed[:, :6])
    assert not torch.allclose(logits[:, 6:], logits_changed[:, 6:])


def test_tied_output_projection_is_the_embedding_matrix() -> None:
    model = TransformerLM(model_cfg(tie_embeddings=True), NormSpec.parse("ln"), 50, 10)
    assert model.output.weight is model.embedding.tokens.weight


def test_sinusoidal_positions_match_hand_values() -> None:
    table = sinusoids(5, 8)
    assert table[0].tolist() == [0, 1] * 4
    assert table[3, 0].item() == pytest.approx(math.sin(3))
    assert table[3, 1].item() == pytest.approx(math.cos(3))
    assert table[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)))


def test_seq2seq_masks_source_padding() -> None:
    torch.manual_seed(0)
    model = TransformerSeq2Seq(model_cfg(position="pre", final_norm=True), NormSpec.parse("ln"), 30, 12).eval()
    pair = torch.randint(4, 30, (2, 2, 12))
    pair[:, 0, 8:] = PAD
    logits = model(pair)
    assert logits.shape == (2, 12, 30)
    with torch.no_grad():
        model.embedding.tokens.weight[PAD] += 1.0  # changes only the padded source states, which no query may see
    torch.testing.assert_close(model(pair), logits, atol=1e-5, rtol=1e-4)


def test_greedy_decoding_picks_the_teacher_forced_argmax_at_every_step() -> None:
    torch.manual_seed(0)
    model = TransformerSeq2Seq(model_cfg(), NormSpec.parse("ln"), 30, 12).eval()
    source = torch.randint(4, 30, (3, 12))
    decoded = model.greedy(source, bos=BOS, eos=EOS, max_len=11)
    length = decoded.shape[1]
    target_in = torch.full((3, 12), PAD)
    target_in[:, 0] = BOS
    target_in[:, 1 : length + 1] = decoded
    teacher = model(torch.stack([source, target_in], dim=1)).argmax(-1)[:, :length]
    ended_before = torch.cumsum(decoded == EOS, dim=1) - (decoded == EOS).long() > 0
    assert torch.equal(decoded[~ended_before], teacher[~ended_before])
    assert torch.all(decoded[ended_before] == PAD)
