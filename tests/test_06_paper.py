"""06_transformer: every constant that a `paper` preset, a paper equation or NOTES' "the paper's recipe" names,
pinned against the paper it comes from (Vaswani et al. 2017 for the Transformer; Radford et al. 2018 and 2019 for
the GPT; nanoGPT's config for charlm's presets; Bahdanau et al. 2015 for vs_rnn's). Change one in the source and
a test here (or in the other test_06 files, named in NOTES.md) fails."""

import importlib
import inspect
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.config import parse_config

train = importlib.import_module("milestones.06_transformer.train")
model = importlib.import_module("milestones.06_transformer.model")
seq2seq = importlib.import_module("milestones.06_transformer.seq2seq")
decode = importlib.import_module("milestones.06_transformer.decode")
gpt = importlib.import_module("milestones.06_transformer.gpt")
charlm = importlib.import_module("milestones.06_transformer.charlm")
rnn = importlib.import_module("milestones.06_transformer.rnn_seq2seq")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def preset(name: str, experiment: str = "translate") -> train.Config:
    """The config `--experiment <experiment> --preset <name>` resolves to (dataclass < preset < flags)."""
    return parse_config(train.Config, ["--experiment", experiment, "--preset", name], train.PRESETS,
                        experiments=train.EXPERIMENTS, milestone=train.MILESTONE)


# ---------------------------------------------------------------------------------------------------------
# The base and big models (Table 3) and the translate presets
# ---------------------------------------------------------------------------------------------------------

def test_base_and_big_are_table_3():
    # Vaswani et al. 2017, Table 3: base N 6, d_model 512, d_ff 2048, h 8, P_drop 0.1; big 6, 1024, 4096, 16, 0.3
    assert model.CONFIGS["base"] == dict(d_model=512, n_layers=6, h=8, d_ff=2048, dropout=0.1)
    assert model.CONFIGS["big"] == dict(d_model=1024, n_layers=6, h=16, d_ff=4096, dropout=0.3)
    for cfg in model.CONFIGS.values():  # sec. 3.2.2: d_k = d_v = d_model / h = 64
        attn = model.MultiHeadAttention(cfg["d_model"], cfg["h"])
        assert attn.d_k == 64


def test_the_config_defaults_are_the_base_models_recipe():
    cfg = train.Config()
    # Table 3 (base): 6 + 6 layers of d_model 512, h 8, d_ff 2048, P_drop 0.1
    assert (cfg.layers, cfg.decoder_layers, cfg.d_model, cfg.heads, cfg.d_ff) == (6, 0, 512, 8, 2048)
    assert cfg.dropout == 0.1  # sec. 5.4: P_drop = 0.1
    assert cfg.label_smoothing == 0.1  # sec. 5.4: epsilon_ls = 0.1
    assert cfg.warmup == 4000 and cfg.lr == 1.0  # sec. 5.3, eq. 3: warmup_steps = 4000, the rate as written
    assert cfg.clip == 0.0  # sec. 5.3 names no gradient clipping
    assert cfg.norm == "post" and cfg.positions == "sinusoidal"  # sec. 3.1 LayerNorm(x + Sublayer(x)); sec. 3.5
    assert cfg.beam == 4 and cfg.alpha == 0.6  # sec. 6.1: beam size 4, length penalty alpha = 0.6
    assert cfg.batch_tokens == 50000  # sec. 5.1: ~25000 source + ~25000 target tokens


def test_the_paper_preset_is_the_base_models_recipe():
    cfg = preset("paper")
    # Table 3 (base) and sec. 5.4
    assert (cfg.layers, cfg.decoder_layers, cfg.d_model, cfg.heads, cfg.d_ff, cfg.dropout) == (6, 0, 512, 8, 2048, 0.1)
    assert cfg.corpus == "wmt14"  # sec. 5.1: WMT 2014 English-German, newstest2014 (Table 2)
    assert cfg.vocab_size == 37000  # sec. 5.1: "a shared source-target vocabulary of about 37000 tokens"
    assert cfg.batch_tokens == 50000 and cfg.batching == "real"  # sec. 5.1: ~25000 real source, ~25000 target
    assert cfg.steps == 100_000  # sec. 5.2: base models trained for 100,000 steps
    assert cfg.warmup == 4000 and cfg.lr == 1.0  # sec. 5.3, eq. 3
    assert cfg.label_smoothing == 0.1  # sec. 5.4
    assert cfg.beam == 4 and cfg.alpha == 0.6  # sec. 6.1
    # sec. 6.1: "averaging the last 5 checkpoints, which were written at 10-minute intervals"; sec. 5.2: base
    # steps took about 0.4 seconds, so 10 minutes are 1,500 steps
    assert cfg.average == 5 and cfg.ckpt_every == round(10 * 60 / 0.4) == 1500
    assert (cfg.norm, cfg.positions, cfg.clip) == ("post", "sinusoidal", 0.0)


def test_the_big_preset_is_the_big_models_recipe():
    cfg = preset("big")
    # Table 3 (big): d_model 1024, h 16, d_ff 4096, P_drop 0.3 (EN-DE), N 6
    assert (cfg.layers, cfg.d_model, cfg.heads, cfg.d_ff, cfg.dropout) == (6, 1024, 16, 4096, 0.3)
    assert cfg.steps == 300_000  # sec. 5.2: big models trained for 300,000 steps
    # sec. 6.1: the last 20 checkpoints averaged; sec. 5.2: big steps took 1.0 s, so 10 minutes are 600 steps
    assert cfg.average == 20 and cfg.ckpt_every == round(10 * 60 / 1.0) == 600
    assert (cfg.corpus, cfg.vocab_size, cfg.batch_tokens, cfg.batching, cfg.warmup, cfg.lr) == \
        ("wmt14", 37000, 50000, "real", 4000, 1.0)  # the rest as base (sec. 5.1, 5.3)
    assert (cfg.label_smoothing, cfg.beam, cfg.alpha) == (0.1, 4, 0.6)  # sec. 5.4, 6.1


def test_the_comparisons_paper_presets_train_the_base_model():
    for experiment in ("vs_rnn", "ablations"):
        cfg = preset("paper", experiment)
        assert (cfg.layers, cfg.d_model, cfg.heads, cfg.d_ff) == (6, 512, 8, 2048), experiment  # Table 3 base
        assert (cfg.warmup, cfg.lr, cfg.label_smoothing, cfg.batching) == (4000, 1.0, 0.1, "real"), experiment
    assert preset("paper", "ablations").dropout == 0.1  # Table 3's rows change one thing from base
    cfg = preset("paper", "vs_rnn")
    # Bahdanau et al. 2015, appendix A.2: word embeddings m = 620, hidden units n = 1000 (n' = 1000 too)
    assert (cfg.rnn_embed, cfg.rnn_hidden) == (620, 1000)
    net = rnn.RNNSearch(50, cfg.rnn_embed, cfg.rnn_hidden)
    assert (net.m, net.n, net.n_align) == (620, 1000, 1000)


# ---------------------------------------------------------------------------------------------------------
# The optimiser and eq. 3
# ---------------------------------------------------------------------------------------------------------

def test_adam_is_sec_5_3_and_steps_along_eq_3():
    net = nn.Linear(4, 4)
    opt, sched = seq2seq.paper_optimizer(net, SimpleNamespace(lr=1.0, d_model=512, warmup=4000))
    assert type(opt) is torch.optim.Adam  # sec. 5.3: Adam, no weight decay
    group = opt.param_groups[0]
    assert tuple(group["betas"]) == (0.9, 0.98) and group["eps"] == 1e-9 and group["weight_decay"] == 0  # sec. 5.3
    lrs = []
    for _ in range(5):
        lrs.append(group["lr"])
        net(torch.ones(1, 4)).sum().backward()
        opt.step()
        sched.step()
    # eq. 3 with step_num counted from 1: the n-th update uses rate(n)
    assert lrs == pytest.approx([512 ** -0.5 * min(n ** -0.5, n * 4000 ** -1.5) for n in range(1, 6)], rel=1e-12)


def test_eq_3_is_the_formula_and_peaks_at_warmup():
    # Vaswani et al. 2017, eq. 3: lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5)
    for d, w in ((512, 4000), (1024, 4000), (32, 7)):
        for s in (1, 2, w // 2 or 1, w - 1, w, w + 1, 3 * w, 100_000):
            assert seq2seq.rate(s, d, w) == pytest.approx(d ** -0.5 * min(s ** -0.5, s * w ** -1.5), rel=1e-12)
    assert seq2seq.rate(4000, 512, 4000) == pytest.approx(6.99e-4, rel=1e-3)  # NOTES: the base peak, 7.0e-4


def test_a_copy_run_trained_with_adam_at_sec_5_3s_constants(tmp_path):
    """The optimiser state a copy run (the translation loop) saved is Adam(0.9, 0.98, 1e-9) without weight decay."""
    train.main(["--experiment", "copy", "--preset", "smoke", "--steps", "2", "--out-dir", str(tmp_path)])
    (ckpt,) = tmp_path.glob("06_transformer/*/checkpoint.pt")
    group = torch.load(ckpt, weights_only=True)["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.9, 0.98) and group["eps"] == 1e-9 and group["weight_decay"] == 0  # sec. 5.3


def test_training_smooths_labels_by_0_1_and_validation_does_not(tmp_path, monkeypatch):
    """sec. 5.4: epsilon_ls = 0.1 on the training loss; the logged validation NLL is the plain cross-entropy."""
    seen = []

    def spy(*args, **kw):
        seen.append(kw.get("label_smoothing", 0.0))
        return F.cross_entropy(*args, **kw)

    monkeypatch.setattr(seq2seq, "F", SimpleNamespace(cross_entropy=spy))
    train.main(["--experiment", "copy", "--preset", "smoke", "--steps", "2", "--eval-every", "2",
                "--out-dir", str(tmp_path)])
    assert seen[:2] == [0.1, 0.1] and set(seen[2:]) == {0.0}  # two training steps, then the validation batches


# ---------------------------------------------------------------------------------------------------------
# The model: embedding scale, dropout placement, positions, tying
# ---------------------------------------------------------------------------------------------------------

def tiny(dropout=0.1, **kw):
    torch.manual_seed(0)
    return model.Transformer(**{**dict(vocab_size=13, d_model=16, n_layers=2, h=2, d_ff=32, dropout=dropout,
                                       max_len=20), **kw})


def test_embeddings_are_scaled_by_sqrt_d_model_and_summed_with_the_sinusoids():
    net = tiny().eval()
    tokens = torch.tensor([[4, 5, 6, 7], [8, 9, 3, 0]])
    want = net.embed.weight[tokens] * math.sqrt(16) + model.sinusoidal_encoding(20, 16)[:4]  # sec. 3.4, 3.5
    torch.testing.assert_close(net.embed_positions(tokens), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(net.embed_positions(tokens[:, 2:], start=2), want[:, 2:], rtol=0, atol=1e-6)
    # and the model reads them: the encoder's input is exactly this sum
    seen = []
    net.encoder[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    net.encode(tokens)
    torch.testing.assert_close(seen[0], want, rtol=0, atol=1e-6)


def test_dropout_acts_on_the_embedding_sums():
    net = tiny(dropout=0.3).train()
    tokens = torch.tensor([[4, 5, 6, 7, 8, 9]])
    torch.manual_seed(5)
    got = net.embed_positions(tokens)
    torch.manual_seed(5)  # sec. 5.4: dropout on "the sums of the embeddings and the positional encodings"
    want = F.dropout(net.embed.weight[tokens] * 4.0 + net.pe[:6], 0.3, training=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_dropout_acts_on_each_sub_layers_output_before_the_residual_add(norm):
    sub = model.Sublayer(8, 0.4, norm).train()
    x = torch.randn(3, 5, 8)
    f = nn.Linear(8, 8)
    torch.manual_seed(7)
    got = sub(x, f)
    torch.manual_seed(7)
    if norm == "post":  # sec. 5.4: "applied to the output of each sub-layer, before it is added to the sub-layer
        want = sub.ln(x + F.dropout(f(x), 0.4, training=True))  # input and normalized" (sec. 3.1: post-LN)
    else:
        want = x + F.dropout(f(sub.ln(x)), 0.4, training=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dropout_is_where_sec_5_4_puts_it_and_nowhere_else():
    """In a training forward, exactly these dropouts act at P_drop: the embedding sums (encoder and decoder), and
    every sub-layer's output (2 per encoder layer, 3 per decoder layer); none inside the FFN or on attention."""
    net = tiny(dropout=0.1).train()
    fired = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Dropout):
            m.register_forward_hook(lambda mod, i, o, name=name: fired.append((name, mod.p)) if mod.p > 0 else None)
    src, tgt = torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 7, 8]])
    net(src, tgt)
    want = ["drop"] + [f"encoder.{i}.sub{j}.drop" for i in range(2) for j in (1, 2)] + ["drop"] + \
        [f"decoder.{i}.sub{j}.drop" for i in range(2) for j in (1, 2, 3)]
    assert fired == [(name, 0.1) for name in want]
    attention = [m for m in net.modules() if isinstance(m, model.MultiHeadAttention)]
    assert len(attention) == 6 and all(m.dropout == 0.0 for m in attention)  # not on the attention weights
    assert all(layer.ffn.drop.p == 0.0 for layer in [*net.encoder, *net.decoder])  # not inside eq. 2


def test_the_ffn_is_eq_2():
    ffn = model.PositionwiseFeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    want = torch.clamp(x @ ffn.W_1.weight.T + ffn.W_1.bias, min=0) @ ffn.W_2.weight.T + ffn.W_2.bias
    torch.testing.assert_close(ffn(x), want)  # eq. 2: max(0, x W_1 + b_1) W_2 + b_2
    assert ffn.W_1.weight.shape == (32, 8)  # d_ff inner


def test_positions_are_sec_3_5s_sinusoids_by_default():
    net = tiny()
    assert net.positions == "sinusoidal" and not hasattr(net, "pos_embed")
    pe = net.pe
    pos, i = torch.arange(20.0)[:, None], torch.arange(8.0)
    angle = pos / 10000 ** (2 * i / 16)  # sec. 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), cos for 2i + 1
    torch.testing.assert_close(pe[:, 0::2], torch.sin(angle), rtol=0, atol=1e-6)
    torch.testing.assert_close(pe[:, 1::2], torch.cos(angle), rtol=0, atol=1e-6)


def test_one_embedding_matrix_for_source_target_and_pre_softmax():
    net = tiny()
    # sec. 3.4: "we share the same weight matrix between the two embedding layers and the pre-softmax
    # linear transformation"
    assert [name for name, m in net.named_modules() if isinstance(m, nn.Embedding)] == ["embed"]
    assert net.pre_softmax.weight is net.embed.weight and net.pre_softmax.bias is None


def test_eq_1_scales_by_sqrt_d_k():
    q, k, v = (torch.randn(1, 1, 3, 16, dtype=torch.float64) for _ in range(3))
    _, w = model.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-2, -1) / 4.0, -1))  # eq. 1: sqrt(d_k) = 4


# ---------------------------------------------------------------------------------------------------------
# Decoding (sec. 6.1) and checkpoint averaging
# ---------------------------------------------------------------------------------------------------------

def test_decoding_defaults_are_sec_6_1():
    for fn in (decode.beam_search, decode.translate):
        params = inspect.signature(fn).parameters
        assert params["beam"].default == 4 and params["alpha"].default == 0.6  # sec. 6.1
    assert decode.EXTRA_LENGTH == 50  # sec. 6.1: "maximum output length ... input length + 50"
    assert decode.length_penalty(7, 0.6) == pytest.approx(((5 + 7) / (5 + 1)) ** 0.6)  # Wu et al. 2016, eq. 14


def test_the_paper_preset_averages_the_last_5_of_checkpoints_1500_steps_apart(tmp_path):
    """sec. 6.1: the last 5 checkpoints written 10 minutes apart; the last is the final step."""
    cfg = preset("paper")
    rt = SimpleNamespace(is_main=True, distributed=False)
    keep = train.KeptWeights(tmp_path, cfg.average, cfg.ckpt_every, cfg.steps, rt)
    net = nn.Linear(2, 1)
    for step in range(90_000, cfg.steps + 1):
        with torch.no_grad():
            net.bias.fill_(step)
        keep.add(net, step)
    averaged, steps = keep.averaged(net)
    assert steps == [94_000, 95_500, 97_000, 98_500, 100_000]
    assert averaged.bias.item() == pytest.approx(sum(steps) / 5)


# ---------------------------------------------------------------------------------------------------------
# The GPT (Radford et al. 2018, laid out as GPT-2, Radford et al. 2019)
# ---------------------------------------------------------------------------------------------------------

def test_gpt_init_is_n_0_0_02_with_scaled_residual_projections():
    net = gpt.GPT(65, n_layer=6, d_model=384)
    for name, p in net.named_parameters():
        if name.endswith(("W_O.weight", "c_proj.weight")):  # GPT-2 sec. 2.3: x 1/sqrt(N), N = 2 n_layer
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(12), rel=0.03), name
        elif p.dim() > 1:  # GPT sec. 4.1: "a simple weight initialization of N(0, 0.02)"
            assert p.std().item() == pytest.approx(0.02, rel=0.03) and abs(p.mean().item()) < 2e-3, name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            assert torch.all(p == 1), name  # LayerNorm gains


def test_gpt_mlp_is_4d_with_gelu():
    mlp = gpt.MLP(8, 0.0, True).eval()
    assert mlp.c_fc.weight.shape == (32, 8)  # GPT sec. 4.1: 3072 inner states for 768, 4 d
    x = torch.randn(2, 3, 8)
    h = mlp.c_fc(x)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))  # GELU (GPT sec. 4.1),
    torch.testing.assert_close(mlp(x), mlp.c_proj(gelu))  # the tanh form of OpenAI's code


def test_gpt_input_is_u_we_plus_wp_and_output_is_tied_after_a_final_layernorm():
    net = gpt.GPT(11, context=8, n_layer=0, n_head=2, d_model=16, dropout=0.0).eval()
    idx = torch.tensor([[1, 5, 3, 9]])
    h0 = net.wte.weight[idx] + net.wpe.weight[:4]  # GPT eq. 2: h_0 = U W_e + W_p, no scale
    want = net.ln_f(h0) @ net.wte.weight.T  # GPT eq. 2: softmax(h_n W_e^T); GPT-2 sec. 2.3: a final LayerNorm
    torch.testing.assert_close(net(idx), want)


def test_gpt_block_is_pre_ln_with_dropout_on_residuals_embeddings_and_attention():
    block = gpt.Block(16, 2, 0.0, True, "scratch").eval()
    x = torch.randn(2, 5, 16)
    z = block.ln_1(x)
    y = x + block.attn(z, z, causal=True)  # GPT-2 sec. 2.3: LayerNorm moved to each sub-block's input
    torch.testing.assert_close(block(x), y + block.mlp(block.ln_2(y)))
    net = gpt.GPT(11, context=8, n_layer=2, n_head=2, d_model=16, dropout=0.1)
    # GPT sec. 4.1: "residual, embedding, and attention dropouts with a rate of 0.1"
    assert net.drop.p == 0.1
    for b in net.blocks:
        assert b.drop.p == b.mlp.drop.p == b.attn.dropout == 0.1


def test_gpt_1s_shape_has_gpt_1s_parameter_count():
    """GPT sec. 4.1: 12 layers, 768 wide, 12 heads, 3072 inner, 512 positions, 40,000 BPE merges (40,478 tokens
    in the released vocabulary); GPT-2 Table 2 gives its size as 117M."""
    with torch.device("meta"):
        net = gpt.GPT(40478, context=512, n_layer=12, n_head=12, d_model=768)
    assert net.num_params() == 40478 * 768 + 512 * 768 + 12 * (12 * 768 ** 2 + 13 * 768) + 2 * 768 == 116_536_320
    assert round(net.num_params() / 1e6) == 117


# ---------------------------------------------------------------------------------------------------------
# charlm's paper / default preset: nanoGPT's config/train_shakespeare_char.py, as NOTES claims
# ---------------------------------------------------------------------------------------------------------

def test_charlm_paper_preset_is_nanogpts_shakespeare_char_config():
    cfg = preset("paper", "charlm")
    assert {**vars(preset("default", "charlm")), "preset": "paper"} == vars(cfg)  # the same recipe
    # nanoGPT config/train_shakespeare_char.py: n_layer 6, n_head 6, n_embd 384, block_size 256, dropout 0.2,
    # batch_size 64, learning_rate 1e-3, max_iters 5000, warmup_iters 100, eval_interval 250; train.py: bias False
    assert (cfg.layers, cfg.heads, cfg.d_model, cfg.context, cfg.dropout) == (6, 6, 384, 256, 0.2)
    assert (cfg.batch_size, cfg.lr, cfg.steps, cfg.warmup, cfg.eval_every, cfg.bias) == \
        (64, 1e-3, 5000, 100, 250, False)
    assert cfg.weight_decay == 0.1 and cfg.schedule == "cosine"  # nanoGPT train.py: weight_decay 1e-1, cosine
    net = charlm.gpt_from(vars(cfg), 65)
    opt = charlm.make_adamw(net, cfg, torch.device("cpu"))
    decayed, rest = opt.param_groups
    assert tuple(decayed["betas"]) == (0.9, 0.99)  # train_shakespeare_char: beta2 = 0.99
    assert decayed["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0  # decay on >= 2-D tensors only
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in rest["params"])
    # a linear warm-up to the peak over warmup_iters 100, then a cosine to min_lr 1e-4 (a tenth) at
    # lr_decay_iters = max_iters = 5000
    factor = charlm.lr_lambda(cfg, cfg.steps)
    assert factor(0) < factor(50) < factor(99) == 1.0
    assert factor(cfg.steps) == pytest.approx(0.1) and factor((cfg.steps + 100) // 2) == pytest.approx(0.55)
