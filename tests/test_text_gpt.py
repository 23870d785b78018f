"""The gpt model on its own: config checks, the KV cache against full forwards, bf16 numerics,
token drawing (temperature, top-k, top-p, per-sequence generators) and stop strings."""

from __future__ import annotations

import pytest
import torch

from genforge.core.errors import ConfigError
from genforge.models.base import Batch
from genforge.models.text.gpt import GPT, GPTConfig
from genforge.models.text.sampling import (
    IncrementalDecoder,
    SamplingParams,
    TextStream,
    next_tokens,
    sequence_generator,
)

VOCAB = 37


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _model(positions: str = "rope", block: int = 8, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=block, n_layer=2, n_head=2, n_embd=16, positions=positions, **kw))
    with torch.no_grad():  # larger weights than the init's: logits far from uniform, errors visible
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def test_config_checks():
    with pytest.raises(ConfigError, match="num_classes"):
        GPT.default_config(65, num_classes=3)
    with pytest.raises(ConfigError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="even"):
        GPTConfig(n_embd=12, n_head=4)  # head size 3 cannot be rotated in pairs
    GPTConfig(n_embd=12, n_head=4, positions="learned")  # learned positions have no such need
    cfg = GPT.default_config(65, n_layer=3)
    assert cfg.vocab_size == 65 and cfg.n_layer == 3 and cfg.num_classes == 0
    with pytest.raises(ConfigError, match="n_layr"):
        GPT.default_config(65, n_layr=3)


def test_tied_output_layer_is_the_embedding_and_saves(tmp_path):
    from safetensors.torch import save_file

    tied, untied = GPT(GPTConfig(vocab_size=VOCAB, n_embd=16, n_head=2, n_layer=1)), GPT(
        GPTConfig(vocab_size=VOCAB, n_embd=16, n_head=2, n_layer=1, tie_weights=False)
    )
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + VOCAB * 16
    assert not any("lm_head" in k for k in tied.state_dict())
    # no tensor saved twice under two names (a real file: safetensors writes a temporary file and
    # renames it over the target, which would replace /dev/null with a regular file)
    save_file(dict(tied.state_dict()), str(tmp_path / "tied.safetensors"))
    # weight decay on matrices only: norms' gains are left alone
    (phase,) = tied.phases()
    assert phase.optimizer.name == "adamw" and phase.optimizer.decay_matrices_only


@pytest.mark.parametrize("slots", [[4, 0, 2], [1, 2, 3]], ids=["scattered-slots", "contiguous-slots"])
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_kv_cache_matches_full_forward(positions, slots):
    """Prompts shorter than, equal to and longer than block_size in several slots, decoded
    together (different lengths in one batch) past block_size: every step's logits equal a full
    forward over the sequence (RoPE: sliding-window attention over all of it; learned positions:
    the last block_size tokens, recomputed)."""
    block = 8
    model = _model(positions, block)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen) for n in (3, 8, 13)]
    steps = 14  # every slot runs past block_size
    seqs = [torch.cat([p, torch.randint(0, VOCAB, (steps,), generator=gen)]) for p in prompts]
    cache = model.new_cache(5)  # slots: any free ones (scattered, or a contiguous run read as a view)

    def reference(seq: torch.Tensor) -> torch.Tensor:
        if positions == "learned":
            seq = seq[-block:]
        return model(seq[None])[0, -1]

    for slot, p in zip(slots, prompts, strict=True):
        torch.testing.assert_close(model.prefill(cache, slot, p), reference(p), rtol=1e-4, atol=1e-4)
    for step in range(steps):
        ids = torch.stack([s[len(p) + step] for s, p in zip(seqs, prompts, strict=True)])
        logits = model.decode(cache, torch.tensor(slots), ids)
        for j, (s, p) in enumerate(zip(seqs, prompts, strict=True)):
            torch.testing.assert_close(logits[j], reference(s[: len(p) + step + 1]), rtol=1e-4, atol=1e-4)
    # a released slot takes a new sequence; decoding a subset of the slots leaves the others alone
    reused = slots[1]
    cache.release(reused)
    fresh = torch.randint(0, VOCAB, (5,), generator=gen)
    model.prefill(cache, reused, fresh)
    logits = model.decode(cache, torch.tensor([reused]), torch.tensor([7]))
    torch.testing.assert_close(logits[0], reference(torch.cat([fresh, torch.tensor([7])])), rtol=1e-4, atol=1e-4)
    assert cache.lengths[slots[0]] == len(seqs[0]) and cache.lengths[reused] == 6


def test_rope_attends_to_a_sliding_window():
    """Past block_size a RoPE model forgets: each layer looks block_size - 1 positions back, so
    with 2 layers a token 2 * (block_size - 1) + 1 positions back no longer matters."""
    model = _model("rope", block=4)
    a = torch.arange(12)[None] + 1
    b = a.clone()
    b[0, 1] = 30
    out_a, out_b = model(a)[0], model(b)[0]
    torch.testing.assert_close(out_a[8:], out_b[8:])  # positions 8.. reach back to 2 at most
    assert not torch.allclose(out_a[7], out_b[7])  # position 7 reaches position 1 through two layers


def test_loss_and_nll_are_fp32_nats_under_bf16_autocast():
    from genforge.train.precision import cpu_has_bf16

    model = _model(block=16).train()
    tokens = torch.randint(0, VOCAB, (4, 17), generator=torch.Generator().manual_seed(0))
    loss32 = model.training_step("main", Batch(tokens), 0).loss
    nll = model.eval().nll(tokens)
    assert nll.shape == (4, 16) and nll.dtype == torch.float32
    torch.testing.assert_close(nll.mean(), loss32.detach(), rtol=1e-5, atol=1e-5)
    if not cpu_has_bf16():
        pytest.skip("bf16 autocast needs a CPU with native bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = model.train().training_step("main", Batch(tokens), 0).loss
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert abs(loss16.item() - loss32.item()) < 0.05 * loss32.item()  # bf16 matmuls, same loss
    loss16.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --- drawing tokens ----------------------------------------------------------------------------


def test_draws_depend_on_the_sequence_alone():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(3))
    params = [
        SamplingParams(1.0),
        SamplingParams(0.7, top_k=5),
        SamplingParams(1.3, top_p=0.8),
        SamplingParams(0.0),
    ]
    batched = [next_tokens(logits, params, [sequence_generator(9, i) for i in range(4)]) for _ in range(2)]
    assert torch.equal(batched[0], batched[1])  # same seeds, same tokens
    gens = [sequence_generator(9, i) for i in range(4)]
    alone = torch.cat([next_tokens(logits[i : i + 1], [params[i]], [gens[i]]) for i in range(4)])
    assert torch.equal(batched[0], alone)  # a row's token does not depend on the other rows
    assert batched[0][3] == logits[3].argmax()  # temperature 0: greedy
    # another seed, or another index under one seed, draws another sequence
    runs = {}
    for key in ((9, 0), (9, 1), (10, 0)):
        gen = sequence_generator(*key)
        runs[key] = [int(next_tokens(logits[:1], params[:1], [gen])[0]) for _ in range(20)]
    assert runs[(9, 0)] != runs[(9, 1)] and runs[(9, 0)] != runs[(10, 0)]


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    probs = torch.softmax(logits, -1)[0]
    draws = {k: set() for k in ("top_k", "top_p", "plain")}
    settings = {"top_k": SamplingParams(1.0, top_k=3), "top_p": SamplingParams(1.0, top_p=0.75), "plain": SamplingParams(5.0)}
    for name, params in settings.items():
        gen = sequence_generator(0, 0)
        for _ in range(400):
            draws[name].add(int(next_tokens(logits, [params], [gen])[0]))
    assert draws["top_k"] == {0, 1, 2}
    # nucleus: the most likely tokens until their mass reaches 0.75 (the token that crosses it stays)
    cum = probs.cumsum(0)
    keep = int((cum < 0.75).sum()) + 1
    assert draws["top_p"] == set(range(keep))
    assert draws["plain"] == set(range(6))  # a hot temperature reaches every token
    with pytest.raises(ConfigError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        SamplingParams(temperature=-1)


def test_draw_frequencies_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    gen = sequence_generator(1, 0)
    counts = torch.bincount(torch.cat([next_tokens(logits, [SamplingParams()], [gen]) for _ in range(3000)]), minlength=3)
    freq = counts.float() / 3000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.04, rtol=0)


# --- text streams and stop strings --------------------------------------------------------------


def _chars(ids):
    return "".join(chr(ord("a") + i) for i in ids)


def test_stop_string_cuts_and_streaming_never_shows_cut_text():
    stream = TextStream(_chars, ["cd", "xyz"])
    shown = []
    for ch in "abxycdef":
        stopped = stream.push(ord(ch) - ord("a"))
        shown.append(stream.take())
        if stopped:
            break
    assert stopped and stream.stopped and stream.text == "abxy"
    assert "".join(shown) == "abxy"
    # "xy" could have started "xyz": it was held back until "c" ruled that out
    assert shown[:4] == ["a", "b", "", ""] and shown[4] == "xy"
    with pytest.raises(RuntimeError):
        stream.push(0)
    # without a stop the held-back tail is released when the sequence ends
    stream = TextStream(_chars, ["xyz"])
    for ch in "abxy":
        stream.push(ord(ch) - ord("a"))
    assert stream.take() == "ab" and not stream.stopped
    stream.finish()
    assert stream.take() == "xy" and stream.text == "abxy"


def test_stop_string_spanning_tokens_and_at_the_start():
    stream = TextStream(lambda ids: "".join(["ab", "c\n", "\nd"][i] for i in ids), ["\n\n"])
    assert not stream.push(0) and not stream.push(1)
    assert stream.push(2) and stream.text == "abc"
    stream = TextStream(_chars, ["a"])
    assert stream.push(0) and stream.text == ""


def test_incremental_decoder_waits_for_whole_characters():
    from genforge.data.text.tokenizer import BPETokenizer

    tok = BPETokenizer.train(["plain ascii text only"], 260)
    text = "naïve 😀 café"
    ids = [tok.encode(ch) for ch in text]  # byte tokens: multi-byte characters span several ids
    flat = [i for group in ids for i in group]
    assert len(flat) > len(text)
    dec = IncrementalDecoder(tok.decode)
    pieces = [dec.push(i) for i in flat]
    assert "".join(pieces) + dec.flush() == text
    assert all("\ufffd" not in p for p in pieces)


def test_bf16_cache_decodes_close_to_fp32():
    """A cache in another dtype than the model (halving its memory): values are cast on the way
    in and out, logits stay close."""
    model = _model("rope", block=8)
    prompt = torch.randint(0, VOCAB, (5,), generator=torch.Generator().manual_seed(2))
    ref, half = model.new_cache(3), model.new_cache(3, dtype=torch.bfloat16)
    assert half.k.dtype == torch.bfloat16
    for cache in (ref, half):
        model.prefill(cache, 0, prompt)
        model.prefill(cache, 2, prompt[:3])
    a = model.decode(ref, torch.tensor([0, 2]), torch.tensor([1, 2]))
    b = model.decode(half, torch.tensor([0, 2]), torch.tensor([1, 2]))
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
