"""The gpt's training forward, written for few operations (bench/text_train_speed.py): the same
numbers as the plain formulation it replaces (slices, rotate_half), values and gradients, and
attention kept in fp32 on CPU under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genforge.models.base import Batch
from genforge.models.text.gpt import GPT, GPTConfig, attention, rotate_half

VOCAB = 29


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))
    with torch.no_grad():  # larger weights than the init's: logits far from uniform, errors visible
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("length", [5, 16])
def test_training_rotation_equals_rotate_half(length):
    rope = _model().transformer.pos
    positions = torch.arange(length)[None]
    x = torch.randn(3, length, 4, 8)  # (B, T, heads, D)
    cos, sin = rope.cos_sin(positions, length)
    want = rotate_half(x, cos.unsqueeze(2), sin.unsqueeze(2))
    got = rope.rotation(positions, length)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(got, x, atol=1e-3)  # it does rotate


def _reference_attention(block, x, rotate):
    """SelfAttention's forward as written before: slices of qkv, then each of q, k, v."""
    attn = block.attn
    b, t, c = x.shape
    h = attn.n_head
    qkv = attn.qkv(x).view(b, t, 3 * h, c // h)
    qk = rotate(qkv[:, :, : 2 * h])
    q, k, v = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2), qkv[:, :, 2 * h :].transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.proj(y.transpose(1, 2).reshape(b, t, c))


def test_attention_values_and_gradients_equal_the_plain_formulation():
    model = _model()
    block, rope = model.transformer.h[0], model.transformer.pos
    t = 12
    positions = torch.arange(t)[None]
    cos, sin = rope.cos_sin(positions, t)
    x = torch.randn(3, t, 16, requires_grad=True)
    ours = block.attn(x, rope.rotation(positions, t), model._causal(t))
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    ref = _reference_attention(block, x, lambda u: rotate_half(u, cos.unsqueeze(2), sin.unsqueeze(2)))
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    assert g_ours.abs().max() > 1e-2  # a gradient that reaches the input


def test_attention_stays_fp32_under_cpu_autocast():
    """fp32 inputs under bf16 autocast: autocast would run the attention in bf16 (6x slower on
    CPU, and coarser); `attention` leaves autocast and gives fp32's exact numbers."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 10, 8, generator=gen) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v, is_causal=True)
    assert got.dtype == torch.float32
    assert torch.equal(got, plain)


def test_bf16_training_loss_follows_fp32():
    """The whole training step under bf16 autocast (casts once per layer before RoPE) against
    fp32: the loss to bf16's precision, gradients of every parameter present and close."""
    model = _model(bias=True)
    tokens = torch.randint(0, VOCAB, (4, 17), generator=torch.Generator().manual_seed(2))

    def loss_and_grads(autocast: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model.training_step("main", Batch(tokens), 0).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss32, grads32 = loss_and_grads(False)
    loss16, grads16 = loss_and_grads(True)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=0.02, atol=0.02)
    assert grads16.keys() == grads32.keys()
    for name, g in grads32.items():
        cos = F.cosine_similarity(g.flatten(), grads16[name].flatten(), dim=0)
        assert cos > 0.97, name
