"""The fused training path (issue 19) on the CPU: same function as transformers+peft, bitwise repeatable.

Tolerances: the fused path folds each adapter into its base product (one float32 accumulation
instead of two rounded sums), so in float32 on the CPU losses agree to ~1e-6 relative and LoRA
gradients to ~1e-4; the compiled (Inductor C++) and eager kernels agree to the same order.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from bundler.runtime.canary import first_difference  # noqa: E402
from bundler.runtime.data import IGNORE_INDEX, Encoded  # noqa: E402
from bundler.runtime.fastpath import FusedPath  # noqa: E402
from bundler.runtime.fused_decoder import document_mask  # noqa: E402
from bundler.runtime.kernels import Kernels, configure_compile  # noqa: E402
from bundler.runtime.modeling import apply_lora  # noqa: E402
from bundler.runtime.packing import collate_packed, pack_documents, packed_batches  # noqa: E402
from bundler.runtime.specs import LoraSpec  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_lora(dropout: float = 0.0, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    base = LlamaForCausalLM(config)
    lora = LoraSpec(r=8, alpha=16, dropout=dropout, target_modules=tuple(TARGETS), init_seed=1, quantization="none")
    model = apply_lora(base, lora, init_seed=1, compute_dtype=torch.float32)
    with torch.no_grad():  # non-zero B, so every adapter term is exercised
        for name, p in sorted(model.peft_model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
    model.peft_model.train()
    return model


def batch(seed: int = 3, rows: int = 2, seq: int = 24):
    ids = torch.randint(0, 300, (rows, seq), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    return ids, labels


def loss_and_grads(model, ids, labels, positions=None):
    params = [(n, p) for n, p in sorted(model.peft_model.named_parameters()) if p.requires_grad]
    for _, p in params:
        p.grad = None
    torch.manual_seed(0)
    loss = model.loss(ids, labels, float((labels[:, 1:] != IGNORE_INDEX).sum()), positions)
    loss.backward()
    return loss.detach().clone(), {n: p.grad.clone() for n, p in params}


def with_fused(model, compiled: bool):
    if compiled:
        configure_compile(deterministic=True)
    model.fused = FusedPath(model, Kernels(compiled))
    return model


def assert_close_grads(a: dict, b: dict, rtol: float) -> None:
    for name in a:
        scale = a[name].abs().max().item() + 1e-12
        assert (a[name] - b[name]).abs().max().item() <= rtol * scale, name


def test_fused_eager_path_matches_transformers_and_peft():
    reference = tiny_lora()
    ids, labels = batch()
    want_loss, want = loss_and_grads(reference, ids, labels)
    fused = with_fused(tiny_lora(), compiled=False)
    got_loss, got = loss_and_grads(fused, ids, labels)
    assert torch.allclose(got_loss, want_loss, rtol=1e-5)
    assert_close_grads(want, got, rtol=1e-4)


def test_fused_path_runs_twice_bitwise_identical_with_dropout():
    model = with_fused(tiny_lora(dropout=0.1), compiled=False)
    ids, labels = batch()
    first, second = loss_and_grads(model, ids, labels), loss_and_grads(model, ids, labels)
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(first[1][n], second[1][n]) for n in first[1])


@pytest.mark.slow
def test_compiled_kernels_agree_with_eager_and_repeat_bitwise():
    ids, labels = batch()
    eager_loss, eager = loss_and_grads(with_fused(tiny_lora(), compiled=False), ids, labels)
    model = with_fused(tiny_lora(), compiled=True)
    compiled_loss, compiled = loss_and_grads(model, ids, labels)
    again_loss, again = loss_and_grads(model, ids, labels)
    assert torch.allclose(compiled_loss, eager_loss, rtol=1e-5)
    assert_close_grads(eager, compiled, rtol=1e-4)
    assert torch.equal(compiled_loss, again_loss)
    assert all(torch.equal(compiled[n], again[n]) for n in compiled)


def test_packed_documents_give_each_example_its_unpacked_loss():
    """Per-document attention and restarted positions: packing changes no example's loss terms."""
    model = with_fused(tiny_lora(), compiled=False)
    examples = [Encoded(list(range(5 + i, 5 + i + n)), list(range(5 + i, 5 + i + n))) for i, n in enumerate((9, 7, 12))]
    ids, labels, positions = collate_packed([examples], pad_id=0, max_len=32)
    model.peft_model.eval()
    packed_loss = model.loss(ids, labels, 1.0, positions)
    alone = sum(model.loss(torch.tensor([e.input_ids]), torch.tensor([e.labels]), 1.0) for e in examples)
    assert torch.allclose(packed_loss, alone, rtol=1e-5)
    model.fused = None  # the transformers path takes the same packed rows
    assert torch.allclose(model.loss(ids, labels, 1.0, positions), alone, rtol=1e-5)


def test_packing_keeps_whole_examples_in_seeded_order():
    examples = [Encoded([1] * n, [1] * n) for n in (50, 900, 300, 700, 20, 1000, 60)]
    rows = pack_documents(examples, 1024)
    assert sorted(id(e) for row in rows for e in row) == sorted(id(e) for e in examples)
    assert all(sum(len(e.input_ids) for e in row) <= 1024 for row in rows)
    again = pack_documents(examples, 1024)
    assert [[id(e) for e in r] for r in rows] == [[id(e) for e in r] for r in again]
    a = next(packed_batches(examples, seed=4, batch_size=2, grad_accum=1, pad_id=0, max_len=1024))
    b = next(packed_batches(examples, seed=4, batch_size=2, grad_accum=1, pad_id=0, max_len=1024))
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))


def test_document_mask_is_block_diagonal_and_causal():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    mask = document_mask(positions)[0]
    assert mask[2, 0] and not mask[3, 2] and mask[4, 3] and not mask[0, 1] and not mask[5, 4]


def test_canary_names_the_first_tensor_that_differs():
    a = [("rms_norm", torch.ones(3)), ("attention (backward)", torch.ones(2))]
    b = [("rms_norm", torch.ones(3)), ("attention (backward)", torch.tensor([1.0, 1.0 + 1e-7]))]
    assert first_difference(a, a) is None
    assert first_difference(a, b) == "attention (backward)"


def test_grouped_lora_with_dropout_matches_its_formula_and_gradients():
    """y_i = x W_i^T + s (x*m_i/(1-p)) A_i^T B_i^T, m_i drawn as (k, N, d) in one call; float64 autograd reference."""
    from bundler.runtime.kernels import dropout_backward_eager
    from bundler.runtime.lora_linear import LoraGroup

    model = tiny_lora(dropout=0.25)
    attn = model.base.model.layers[0].self_attn
    modules = [("q_proj", attn.q_proj), ("k_proj", attn.k_proj), ("v_proj", attn.v_proj)]
    group = LoraGroup.build(modules, torch.float32, dropout_backward_eager)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    torch.manual_seed(11)
    y = group(x)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(6))
    (y * dy).sum().backward()
    torch.manual_seed(11)
    mask = torch.empty((3, 10, 64)).bernoulli_(0.75).double()
    x64 = x.detach().double().requires_grad_(True)
    outs, params = [], []
    for i, (_, module) in enumerate(modules):
        a = module.lora_A["default"].weight.detach().double().requires_grad_(True)
        b = module.lora_B["default"].weight.detach().double().requires_grad_(True)
        w = module.base_layer.weight.detach().double()
        s = module.scaling["default"]
        outs.append(x64 @ w.t() + s * ((x64 * mask[i] / 0.75) @ a.t()) @ b.t())
        params += [(module.lora_A["default"].weight, a), (module.lora_B["default"].weight, b)]
    want = torch.cat(outs, dim=1)
    (want * dy.double()).sum().backward()
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    for got, ref in params:
        assert torch.allclose(got.grad.double(), ref.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_canary_passes_twice_on_cpu_kernels_and_leaves_the_adapter_unchanged(fused: bool, packed: bool):
    from bundler.runtime.canary import _one_pass

    model = tiny_lora(dropout=0.1)
    if fused:
        with_fused(model, compiled=False)
    before = {n: p.detach().clone() for n, p in model.peft_model.named_parameters() if p.requires_grad}
    first, second = _one_pass(model, (2, 16), packed), _one_pass(model, (2, 16), packed)
    assert first_difference(first, second) is None
    assert len(first) > 10
    after = {n: p.detach() for n, p in model.peft_model.named_parameters() if p.requires_grad}
    assert all(torch.equal(before[n], after[n]) for n in before)
