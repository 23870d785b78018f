"""The gpt's decode step in ONNX Runtime (models/text/onnx_decode.py) against the torch step: the
same logits to float rounding and the same cache, whole-cache and some-slot steps, RoPE and
learned positions past the context; the same completions (greedy and seeded sampling) from a
trained model; the runtime setting, the per-model export cache and the fallback to torch."""

from __future__ import annotations

import warnings

import pytest
import torch

from genforge.core.errors import ConfigError
from genforge.data.text.tokenizer import CharTokenizer
from genforge.models.base import Batch
from genforge.models.text import onnx_decode
from genforge.models.text.gpt import GPT, GPTConfig
from genforge.models.text.onnx_decode import OnnxDecoder, text_decoder
from genforge.models.text.pipeline import TextPipeline

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)

VOCAB = 29
CHARS = "abcdefghijklmnopqrstuvwxyz ."  # + <unk>: VOCAB ids
TEXT = "to be or not to be, that is the question.\n" * 8


def _model(positions: str = "rope", block: int = 8, bias: bool = False, tie: bool = True) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, block_size=block, n_layer=2, n_head=2, n_embd=16,
                    positions=positions, bias=bias, tie_weights=tie)  # fmt: skip
    model = GPT(cfg)
    with torch.no_grad():  # larger weights than the init's: logits far from uniform, errors visible
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    ("positions", "bias", "tie"), [("rope", False, True), ("rope", True, False), ("learned", False, True)]
)
def test_onnx_steps_equal_the_torch_steps(positions, bias, tie):
    """Three slots of different lengths run past the context (block 8) through whole-cache steps,
    one-slot steps in a larger cache and some-slot steps: logits and caches agree."""
    model = _model(positions, bias=bias, tie=tie)
    onnx = OnnxDecoder(model)
    caches = [model.new_cache(3) for _ in range(2)]
    for cache in caches:
        for slot, prompt in enumerate(([1, 2, 3], [4], [5, 6, 7, 8, 9, 10])):
            model.prefill(cache, slot, prompt)
    schedule = [[0, 1, 2]] * 6 + [[1]] * 3 + [[2, 0]] * 4 + [[0, 1, 2]] * 5
    for step, slots in enumerate(schedule):
        ids = [(7 * step + 3 * s) % VOCAB for s in slots]
        a = model.decode(caches[0], slots, ids)
        b = onnx.decode(caches[1], slots, ids)
        assert b.shape == a.shape == (len(slots), VOCAB) and b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)
    assert caches[1].lengths == caches[0].lengths and caches[1].tokens == caches[0].tokens
    assert max(caches[0].lengths) > 2 * 8  # well past the context
    torch.testing.assert_close(caches[1].k, caches[0].k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].v, caches[0].v, atol=1e-5, rtol=1e-5)


def _trained_pipeline() -> TextPipeline:
    tokenizer = CharTokenizer(sorted(set(TEXT)))
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg)
    ids = torch.tensor(tokenizer.encode(TEXT))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 17, (16,), generator=gen)
        batch = torch.stack([ids[s : s + 17] for s in starts.tolist()])
        loss = model.training_step("main", Batch(batch), 0).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.5  # it has learnt something: its greedy text is not noise
    return TextPipeline(model=model.eval(), info={"model": "gpt"}, path=".", tokenizer=tokenizer)


def test_both_runtimes_complete_alike():
    """Greedy (top-k 1, temperature 0) and seeded sampling give the same text from both steps,
    one stream and several (distinct prompts, n > 1, a stop string ending some early)."""
    pipe = _trained_pipeline()
    assert isinstance(pipe.decoder("onnx"), OnnxDecoder)  # not a fallback to torch
    settings = [{"top_k": 1}, {"temperature": 0.0}, {"temperature": 0.8, "top_k": 5, "seed": 3},
                {"top_p": 0.9, "seed": 4, "stop": "q"}]  # fmt: skip
    for options in settings:
        for prompts, n in ((["to be"], 1), (["to be", "", "that"], 2)):
            torch_out = pipe.complete(prompts, n=n, max_tokens=60, runtime="torch", **options)
            onnx_out = pipe.complete(prompts, n=n, max_tokens=60, runtime="onnx", **options)
            assert [c.text for c in onnx_out] == [c.text for c in torch_out], options
            assert [c.finish_reason for c in onnx_out] == [c.finish_reason for c in torch_out]
    assert "to be" in pipe.complete(["to be or not "], max_tokens=20, top_k=1, runtime="onnx")[0].text


def test_int8_weights_step():
    """onnx-int8: every weight matrix of the step in MatMulNBits (8 bits), the cache and
    bookkeeping as fp32's, logits within the weights' rounding of the torch step's; on the trained
    model, greedy completions equal torch's."""
    import onnx

    model = _model(bias=True, tie=False)
    graph = onnx.load_from_string(onnx_decode.quantize_int8(onnx_decode.export_step(model)))
    ops = [n.op_type for n in graph.graph.node]
    # qkv, attention projection, fc, fc projection per layer, and the head; MatMul is left for
    # the attention's two products per layer
    assert ops.count("MatMulNBits") == 4 * 2 + 1 and ops.count("MatMul") == 2 * 2
    assert all(a.i == 8 for n in graph.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits")
    int8 = OnnxDecoder(model, int8=True)
    caches = [model.new_cache(3) for _ in range(2)]
    for cache in caches:
        for slot, prompt in enumerate(([1, 2, 3], [4], [5, 6, 7, 8, 9, 10])):
            model.prefill(cache, slot, prompt)
    errors = []
    for step, slots in enumerate([[0, 1, 2]] * 6 + [[1]] * 3 + [[2, 0]] * 3):
        ids = [(7 * step + 3 * s) % VOCAB for s in slots]
        a, b = model.decode(caches[0], slots, ids), int8.decode(caches[1], slots, ids)
        assert b.shape == a.shape and b.dtype == torch.float32
        errors.append(float((b - a).abs().max() / a.std()))
    assert caches[1].lengths == caches[0].lengths and caches[1].tokens == caches[0].tokens
    # measured 0.12 (this model's large weights, N(0, 0.3)); a step that dropped a layer or
    # swapped a matrix is off by more than the logits' spread
    assert 1e-4 < max(errors) < 0.3, errors
    pipe = _trained_pipeline()
    assert pipe.decoder("onnx-int8").int8 and pipe.decoder("onnx-int8") is not pipe.decoder("onnx")
    torch_out = pipe.complete(["to be", "", "that"], max_tokens=60, top_k=1, runtime="torch")
    int8_out = pipe.complete(["to be", "", "that"], max_tokens=60, top_k=1, runtime="onnx-int8")
    assert [c.text for c in int8_out] == [c.text for c in torch_out]


def test_the_runtime_setting(monkeypatch):
    model = _model()
    assert text_decoder(model, "torch") is model
    decoder = text_decoder(model, "onnx")
    assert isinstance(decoder, OnnxDecoder) and text_decoder(model, "auto") is decoder  # exported once
    assert text_decoder(model, "auto", tokens=10) is decoder  # exported already: used for a short call
    with torch.no_grad():
        model.transformer.wte.weight.mul_(1.5)  # new weights: a new export
    assert text_decoder(model, "auto", tokens=10) is model  # a short call does not pay for an export
    assert text_decoder(model, "auto") is not decoder
    with pytest.raises(ConfigError, match="runtime: expected one of auto, torch, onnx, onnx-int8"):
        text_decoder(model, "fast")
    pipe = TextPipeline(model=model, info={}, path=".", tokenizer=CharTokenizer(CHARS))
    assert pipe.runtime == "auto" and isinstance(pipe.decoder(), OnnxDecoder) and pipe.decoder("torch") is model
    monkeypatch.setenv("GENFORGE_TEXT_RUNTIME", "torch")
    pipe = TextPipeline(model=model, info={}, path=".", tokenizer=pipe.tokenizer)
    assert pipe.runtime == "torch" and pipe.decoder() is model
    with pytest.raises(ConfigError, match="runtime"):
        TextPipeline(model=model, info={}, path=".", tokenizer=pipe.tokenizer, runtime="jit")
    assert text_decoder(model.to(torch.bfloat16), "auto") is model  # ORT's step is fp32


def test_a_failed_export_falls_back_to_torch_with_one_warning(monkeypatch):
    model = _model()
    pipe = TextPipeline(model=model, info={}, path=".", tokenizer=CharTokenizer(CHARS))

    def broken(_model):
        raise RuntimeError("no ONNX form for this")

    monkeypatch.setattr(onnx_decode, "export_step", broken)
    with pytest.warns(RuntimeWarning, match="ONNX Runtime step unavailable.*no ONNX form"):
        out = pipe.complete(["abc"], max_tokens=12, top_k=1, runtime="onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same weights: no second attempt, no second warning
        again = pipe.complete(["abc"], max_tokens=12, top_k=1, runtime="onnx")
    assert out[0].text == again[0].text == pipe.complete(["abc"], max_tokens=12, top_k=1, runtime="torch")[0].text


def test_positions_past_the_rope_tables_and_the_service_entry_point():
    """A prompt longer than the 1,024 positions the RoPE tables start with; and `ThroughModel`
    (the service's decoder) runs the ORT step through `model.decode`, which callers may wrap."""
    from genforge.deploy.config import ServeConfig
    from genforge.models.text.onnx_decode import ThroughModel

    model = _model()
    onnx = OnnxDecoder(model)
    caches = [model.new_cache(1) for _ in range(3)]
    prompt = [(5 * i) % VOCAB for i in range(1100)]
    for cache in caches:
        model.prefill(cache, 0, prompt)
    calls = []
    decode = model.decode
    model.decode = lambda *args: calls.append(len(args)) or decode(*args)  # as the service tests wrap it
    through = ThroughModel(onnx)
    for step in range(3):
        a = decode(caches[0], [0], [step])
        torch.testing.assert_close(onnx.decode(caches[1], [0], [step]), a, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(through.decode(caches[2], [0], [step]), a, atol=2e-5, rtol=1e-5)
    assert calls == [4, 4, 4] and caches[2].lengths == caches[0].lengths == [1103]
    with pytest.raises(ConfigError, match="text_runtime"):
        ServeConfig(text_runtime="fast")
