"""The gpt's decode step: its inputs, the one-slot fast path against the batched one, the row
rotation against the training rotation, and how many tensor operations a step costs (a one-stream
token is mostly per-operation overhead at this size, see models/text/gpt.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genforge.core.errors import GenforgeError
from genforge.models.text.gpt import GPT, GPTConfig, rotate_half

VOCAB = 29


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _model(positions: str = "rope", block: int = 8, n_layer: int = 2) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=VOCAB, block_size=block, n_layer=n_layer, n_head=2, n_embd=16, positions=positions
    )
    model = GPT(cfg)
    with torch.no_grad():  # larger weights than the init's: logits far from uniform, errors visible
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


class _Kernels(TorchDispatchMode):
    """Names of the operations that compute (views and aliases left out) run under the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_decode_takes_lists_or_tensors_and_checks_its_input():
    model = _model()
    caches = [model.new_cache(3) for _ in range(2)]
    for cache in caches:
        model.prefill(cache, 0, [1, 2, 3])
        model.prefill(cache, 2, [4])
    a = model.decode(caches[0], [0, 2], [5, 6])
    b = model.decode(caches[1], torch.tensor([0, 2]), torch.tensor([[5], [6]]))
    assert torch.equal(a, b) and a.shape == (2, VOCAB)
    assert caches[0].lengths == [4, 0, 2] and caches[0].tokens[2] == [4, 6]
    with pytest.raises(GenforgeError, match=r"token ids must be in \[0, 29\)"):
        model.decode(caches[0], [0], [VOCAB])
    with pytest.raises(GenforgeError, match=r"token ids must be in \[0, 29\)"):
        model.decode(caches[0], [0], [-1])  # a negative id would read another row of a table
    with pytest.raises(GenforgeError, match="2 slots but 1 token ids"):
        model.decode(caches[0], [0, 2], [5])
    with pytest.raises(GenforgeError, match="prefilled first"):
        model.decode(caches[0], [1], [5])
    assert caches[0].lengths == [4, 0, 2]  # refused steps change nothing


@pytest.mark.parametrize("positions", [[0], [3, 0, 7], [70_000]], ids=["one", "several", "far"])
def test_row_rotation_equals_the_training_rotation(positions):
    """The decode step's rotation (one matrix per position, the half swap's sign in its table)
    gives the training forward's numbers, also at positions that grow the table."""
    rope = _model().transformer.pos
    x = torch.randn(len(positions), 6, 8)  # (S, heads, head size)
    cos, sin = rope.cos_sin(torch.tensor(positions), max(positions) + 1)
    want = rotate_half(x, cos[:, None], sin[:, None])
    rotate = rope.row_rotation(positions, x.device)
    got = rotate(x[0])[None] if len(positions) == 1 else rotate(x)  # one position: (heads, D)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_one_slot_steps_equal_the_batched_steps(positions):
    """A slot decoded on its own (plain-int addressing) and the same slot decoded among others
    (index tensors, a mask for the shorter rows) give the same logits, past block_size too."""
    model = _model(positions)
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (2, 6, 11)]
    alone, together = model.new_cache(3), model.new_cache(4)
    slots = [3, 0, 1]  # scattered: read through an index tensor
    for slot, prompt in zip(slots, prompts, strict=True):
        model.prefill(together, slot, prompt)
    model.prefill(alone, 1, prompts[1])
    for _ in range(12):  # every row runs past block_size = 8
        ids = torch.randint(0, VOCAB, (3,), generator=gen).tolist()
        batched = model.decode(together, slots, ids)
        single = model.decode(alone, [1], [ids[1]])
        torch.testing.assert_close(single[0], batched[1], rtol=1e-5, atol=1e-5)


def test_a_one_slot_step_costs_few_operations():
    """A one-stream decode step is 11 operations per layer (norm, qkv product, rotation, two
    cache writes, attention, projection with the residual folded in, the MLP's four) plus the
    step's rotation matrix (2), the final norm and the logits: at this size a token's cost is
    their fixed overhead, so this bounds it."""
    n_layer = 3
    model = _model("rope", n_layer=n_layer)
    cache = model.new_cache(4)
    model.prefill(cache, 2, [1, 2, 3])
    model.decode(cache, [2], [4])  # tables and first-call allocations
    with _Kernels() as counted:
        model.decode(cache, [2], [5])
    names = counted.names
    assert len(names) == 13 * n_layer + 5, names
    # one vector through each matrix: matrix-vector products (the rotation is (heads, D) @ (D, D))
    assert sum(names.count(f) for f in ("mv.default", "addmv.default")) == 4 * n_layer + 1, names
    assert names.count("mm.default") == n_layer and "addmm.default" not in names, names
