"""06_transformer models: eq. 1 against PyTorch's kernel, positions, parameter counts against the papers,
KV caches against full forwards, generation, and overfitting one batch."""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

model = importlib.import_module("milestones.06_transformer.model")
gpt = importlib.import_module("milestones.06_transformer.gpt")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def qkv(B=2, h=3, Tq=5, Tk=7, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, T, d, generator=g, dtype=torch.float64, requires_grad=True) for T in (Tq, Tk, Tk)]


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "causal_flag"])
def test_scratch_attention_equals_torch_values_and_gradients(kind):
    q, k, v = qkv(Tq=6, Tk=6)
    mask, causal = None, False
    if kind == "padding":
        mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])[:, None, None, :]  # (B, 1, 1, Tk)
    elif kind == "causal":
        mask = torch.ones(6, 6, dtype=torch.bool).tril()
    elif kind == "causal_flag":
        causal = True
    ours, weights = model.scaled_dot_product_attention(q, k, v, mask, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad((ours * ours.detach().cos()).sum(), [q, k, v])
    g_ref = torch.autograd.grad((ref * ref.detach().cos()).sum(), [q, k, v])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 6, dtype=torch.float64))
    if kind == "padding":
        assert torch.all(weights[1, :, :, 3:] == 0) and torch.all(weights[1, :, :, :3] > 0)
    if kind.startswith("causal"):
        assert torch.all(weights.triu(1) == 0)  # exactly zero above the diagonal
    fast = model.attention(q, k, v, mask, impl="fast", causal=causal)
    torch.testing.assert_close(fast, model.attention(q, k, v, mask, impl="scratch", causal=causal))


def test_by_hand_and_fully_masked_row():
    q, k, v = qkv(B=1, h=1, Tq=2, Tk=3, d=2)
    mask = torch.tensor([[True, False, True], [False, False, False]])  # row 1: nothing to attend to
    out, w = model.scaled_dot_product_attention(q, k, v, mask)
    s = (q[0, 0, 0] @ k[0, 0].T / math.sqrt(2)).detach()  # eq. 1 for query 0, by hand
    e = torch.exp(s) * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(w[0, 0, 0], e / e.sum())
    assert w[0, 0, 0, 1] == 0 and torch.all(w[0, 0, 1] == 0) and torch.all(out[0, 0, 1] == 0)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    out16, _ = model.scaled_dot_product_attention(*(t.detach().bfloat16() for t in (q, k, v)), mask)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()


def test_causal_is_bottom_right_aligned_for_cached_queries():
    q, k, v = qkv(Tq=3, Tk=7)  # the last 3 of 7 positions
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(7, 7, dtype=torch.bool).tril()[4:])
    for impl in model.IMPLS:
        torch.testing.assert_close(model.attention(q, k, v, impl=impl, causal=True), want)


def test_sinusoidal_encoding_is_the_formula():
    pe = model.sinusoidal_encoding(50, 16)  # Vaswani et al. 2017, sec. 3.5: sin / cos of pos / 10000^(2i/d_model)
    assert pe.shape == (50, 16)
    for pos, i in [(0, 0), (1, 0), (3, 2), (17, 5), (49, 7)]:
        angle = pos / 10000 ** (2 * i / 16)
        assert abs(pe[pos, 2 * i].item() - math.sin(angle)) < 1e-6
        assert abs(pe[pos, 2 * i + 1].item() - math.cos(angle)) < 1e-6
    assert model.sinusoidal_encoding(4, 5).shape == (4, 5)  # odd widths end on a sine


def tiny_transformer(**kw):
    args = dict(vocab_size=11, d_model=16, n_layers=2, h=4, d_ff=32, dropout=0.1, max_len=20)
    return model.Transformer(**{**args, **kw})


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 11, (3, 9), generator=g)
    src[1, 6:] = 0  # padding (pad_id = 0)
    tgt = torch.randint(3, 11, (3, 7), generator=g)
    tgt[:, 0] = 1  # BOS
    tgt[2, 4:] = 0
    return src, tgt


def test_transformer_shapes_and_fast_equals_scratch():
    src, tgt = batch()
    torch.manual_seed(0)
    fast = tiny_transformer().double().eval()
    scratch = tiny_transformer(impl="scratch").double().eval()
    scratch.load_state_dict(fast.state_dict())
    logits = fast(src, tgt)
    assert logits.shape == (3, 7, 11)
    torch.testing.assert_close(scratch(src, tgt), logits, rtol=1e-10, atol=1e-10)
    attn = fast.decoder[1].cross_attn
    attn.keep_weights = True
    torch.testing.assert_close(fast(src, tgt), logits, rtol=1e-10, atol=1e-10)
    w = attn.last_weights
    assert w.shape == (3, 4, 7, 9) and torch.all(w[1, ..., 6:] == 0)  # padded source words get no weight
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 7, dtype=torch.float64))


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_norms_positions_and_weight_tying(norm, positions):
    src, tgt = batch()
    net = tiny_transformer(norm=norm, positions=positions)
    assert net.pre_softmax.weight is net.embed.weight
    loss = F.cross_entropy(net(src, tgt).flatten(0, 1), tgt.flatten())
    loss.backward()
    assert torch.isfinite(loss) and net.embed.weight.grad.abs().sum() > 0
    n = sum(p.numel() for p in net.parameters())
    extra = 20 * 16 if positions == "learned" else 0
    assert n == model.base_param_count(11, 16, 2, 32, norm=norm) + extra
    with pytest.raises(ValueError, match="max_len"):
        net(torch.ones(1, 21, dtype=torch.long), tgt[:1])


@pytest.mark.parametrize("vocab", [37000, 8000])
def test_param_count_formula_is_exact(vocab):
    for name, cfg in model.CONFIGS.items():
        with torch.device("meta"):  # shapes only: no memory, no init
            net = model.Transformer(vocab, **cfg)
        n = sum(p.numel() for p in net.parameters())  # the tied matrix is counted once
        assert n == model.base_param_count(vocab, cfg["d_model"], cfg["n_layers"], cfg["d_ff"])


def test_param_counts_against_table_3():
    base = model.base_param_count(37000)  # 37000: the paper's shared EN-DE BPE vocabulary (sec. 5.1)
    big = model.base_param_count(37000, d_model=1024, d_ff=4096)
    assert base == 63_082_496 and big == 214_245_376
    assert abs(base / 65e6 - 1) < 0.035  # Table 3: 65M (ours is 2.9% less: see NOTES.md)
    assert abs(big / 213e6 - 1) < 0.01  # Table 3: 213M


def test_transformer_kv_cache_equals_full_decode():
    src, tgt = batch(1)
    torch.manual_seed(0)
    net = tiny_transformer().double().eval()
    memory, keep = net.encode(src)
    full = net.decode(tgt, memory, keep)
    cache, steps = {}, []
    for t in range(tgt.shape[1]):
        steps.append(net.decode(tgt[:, t:t + 1], memory, keep, cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-9)
    order = torch.tensor([2, 0, 1])  # beam search reorders the batch, cache included
    cache = {}
    net.decode(tgt[:, :3], memory, keep, cache)
    net.reorder_cache(cache, order)
    rest = net.decode(tgt[order, 3:], memory[order], keep[order], cache)
    torch.testing.assert_close(rest, full[order, 3:], rtol=0, atol=1e-9)


def tiny_gpt(**kw):
    return gpt.GPT(**{**dict(vocab_size=13, context=16, n_layer=2, n_head=2, d_model=16, dropout=0.0), **kw})


@pytest.mark.parametrize("impl", model.IMPLS)
def test_gpt_kv_cache_equals_full_forward(impl):
    torch.manual_seed(0)
    net = tiny_gpt(impl=impl).double().eval()
    idx = torch.randint(0, 13, (2, 16))
    full = net(idx)
    assert full.shape == (2, 16, 13)
    cache = []
    steps = [net(idx[:, :5], cache)]  # a prompt of 5, then one token at a time
    steps += [net(idx[:, t:t + 1], cache) for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="context"):
        net(idx[:, :1], cache)  # the 17th position does not exist


def test_gpt_generate_greedy_same_with_and_without_cache():
    torch.manual_seed(0)
    net = tiny_gpt().eval()
    prompt = torch.randint(0, 13, (2, 5))
    a = net.generate(prompt, 20, top_k=1, use_cache=True)  # 25 tokens: runs past the context of 16
    b = net.generate(prompt, 20, top_k=1, use_cache=False)
    assert a.shape == (2, 25) and torch.equal(a[:, :5], prompt) and torch.equal(a, b)
    g = torch.Generator().manual_seed(3)
    s = net.generate(prompt, 8, temperature=0.8, top_k=4, generator=g)
    assert s.shape == (2, 13) and s.max() < 13
    with pytest.raises(ValueError, match="prompt has 17 tokens"):
        net.generate(torch.zeros(1, 17, dtype=torch.long), 1)


def test_gpt_init_tying_and_param_counts():
    net = gpt.GPT(65)  # nanoGPT's baby GPT: 6 layers, 6 heads, 384 wide, context 256, 65 characters
    assert net.lm_head.weight is net.wte.weight
    d, L = 384, 6
    assert net.num_params() == 65 * d + 256 * d + L * (12 * d * d + 13 * d) + 2 * d == 10_770_816  # NOTES.md
    lean = gpt.GPT(65, bias=False)
    assert lean.num_params(exclude_positions=True) == 10_646_784  # nanoGPT prints 10.65M
    std = net.blocks[0].attn.W_O.weight.std().item()
    assert abs(std / (0.02 / math.sqrt(2 * L)) - 1) < 0.05  # GPT-2 sec. 2.3: residual layers x 1/sqrt(N)
    assert abs(net.blocks[0].mlp.c_fc.weight.std().item() / 0.02 - 1) < 0.05  # GPT sec. 4.1: N(0, 0.02)


def test_tiny_transformer_learns_to_copy():
    torch.manual_seed(0)
    src = torch.randint(3, 12, (8, 8))
    tgt = torch.cat([torch.ones(8, 1, dtype=torch.long), src], 1)  # BOS, then the source again
    net = model.Transformer(12, d_model=32, n_layers=2, h=4, d_ff=64, dropout=0.0, max_len=16)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(150):
        loss = F.cross_entropy(net(src, tgt[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert torch.equal(net.eval()(src, tgt[:, :-1]).argmax(-1), src)


def test_tiny_gpt_overfits_shakespeare(data_root):
    text = (data_root / "tinyshakespeare" / "input.txt").read_text()[:20000]
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    x = torch.stack([ids[i * 500:i * 500 + 33] for i in range(4)])  # 4 windows of 32 + 1 characters
    torch.manual_seed(0)
    net = gpt.GPT(len(chars), context=32, n_layer=2, n_head=4, d_model=64, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(net(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(len(chars))) < 0.3  # a fresh net is close to uniform
    assert losses[-1] < 0.1


def test_bad_configurations_fail_clearly():
    with pytest.raises(ValueError, match="divisible"):
        model.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="impl"):
        model.MultiHeadAttention(8, 2, impl="flash")
    with pytest.raises(ValueError, match="norm"):
        tiny_transformer(norm="sandwich")
    with pytest.raises(ValueError, match="positions"):
        tiny_transformer(positions="rotary")
