"""06_transformer's recurrent baseline (rnn_seq2seq.py): Bahdanau's additive attention over a bidirectional
LSTM encoder, decoded by decode.py's own search, and the vs_rnn experiment's smoke run."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import keep_sessions, only_run_dir, read_metrics, read_summary

rnn = importlib.import_module("milestones.06_transformer.rnn_seq2seq")
data = importlib.import_module("milestones.06_transformer.data")
decode = importlib.import_module("milestones.06_transformer.decode")
train = importlib.import_module("milestones.06_transformer.train")

ARM_KEYS = ("bleu", "params", "tokens_per_second", "train_seconds")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def padded_batch(seed=0, vocab=40):
    """Three sources of lengths 7, 4 and 2 (right-padded with 0) and a target prefix of 5 tokens."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (3, 7), generator=g)
    src[1, 4:] = data.PAD
    src[2, 2:] = data.PAD
    return src, torch.randint(4, vocab, (3, 5), generator=g)


def small(vocab=40, seed=0):
    torch.manual_seed(seed)
    return rnn.RNNSearch(vocab, m=12, n=16, n_align=10, l=8, dropout=0.0, pad_id=data.PAD).eval()


def test_the_rnn_arm_clips_at_bahdanaus_norm_and_trains_at_its_sizes():
    vs_rnn = importlib.import_module("milestones.06_transformer.vs_rnn")
    assert vs_rnn.RNN_CLIP == 1.0  # Bahdanau et al. 2015, appendix A.2.2: gradient norm renormalised to at most 1
    cfg = train.Config(**{**vars(train.Config()), **train.PRESETS["vs_rnn/smoke"]})
    net, _, _, clip = vs_rnn.build("rnn", cfg, 300, 64)
    assert (net.m, net.n, clip) == (cfg.rnn_embed, cfg.rnn_hidden, 1.0)


def test_reverse_padded_reverses_each_sentence_and_keeps_its_padding():
    x = torch.arange(1, 6.0)[None, :, None].repeat(2, 1, 1)  # (2, 5, 1): 1 2 3 4 5 in both rows
    out = rnn.reverse_padded(x, torch.tensor([5, 3]))[..., 0]
    assert out.tolist() == [[5, 4, 3, 2, 1], [3, 2, 1, 4, 5]]
    assert torch.equal(rnn.reverse_padded(rnn.reverse_padded(x, torch.tensor([5, 3])), torch.tensor([5, 3])), x)


def test_attention_weights_sum_to_one_and_are_zero_on_padding():
    net = small()
    src, tgt_in = padded_batch()
    memory, keep = net.encode(src)
    _, alpha = net.steps(tgt_in, memory, keep)  # (B, T, S)
    assert alpha.shape == (3, 5, 7)
    assert torch.allclose(alpha.sum(-1), torch.ones(3, 5), atol=1e-6)
    assert (alpha[1, :, 4:] == 0).all() and (alpha[2, :, 2:] == 0).all()  # exactly zero, not small
    assert (alpha[0] > 0).all() and (alpha[1, :, :4] > 0).all()  # every real source token gets some weight
    h, Uh = net.split_memory(memory)
    c, a = net.attend(torch.randn(3, 16), h, Uh, keep)  # eq. 5: c_i is the alpha-weighted sum of the h_j
    assert torch.allclose(c, torch.einsum("bs,bsd->bd", a, h), atol=1e-6)


def test_padding_does_not_change_a_sentence():
    """A sentence alone gives the logits it gets in a padded batch: the backward LSTM starts at its last token."""
    net = small()
    src, tgt_in = padded_batch()
    batched = net(src, tgt_in)
    for b, n in enumerate((7, 4, 2)):
        alone = net(src[b:b + 1, :n], tgt_in[b:b + 1])
        assert torch.allclose(alone, batched[b:b + 1], atol=1e-5), b


def test_greedy_equals_beam_one_and_the_cache_changes_nothing():
    net = small(seed=1)
    src, tgt_in = padded_batch(seed=1)
    greedy = decode.greedy(net, src, data.BOS, data.EOS, max_len=9)
    assert greedy == decode.beam_search(net, src, data.BOS, data.EOS, beam=1, max_len=9)
    assert greedy == decode.greedy(net, src, data.BOS, data.EOS, max_len=9, cache=False)  # re-read the prefix
    beam = decode.beam_search(net, src, data.BOS, data.EOS, beam=3, max_len=9)
    assert beam == decode.beam_search(net, src, data.BOS, data.EOS, beam=3, max_len=9, cache=False)
    memory, keep = net.encode(src)  # one step with the cache = the last position of the whole prefix
    cache = {}
    net.decode(tgt_in[:, :4], memory, keep, cache)
    assert torch.allclose(net.decode(tgt_in[:, 4:], memory, keep, cache)[:, 0],
                          net.decode(tgt_in, memory, keep)[:, 4], atol=1e-5)


def test_overfits_one_batch_of_real_pairs(data_root):
    m30k = data.load_multi30k(data_root, vocab_size=300)  # the smoke preset's vocabulary
    src, tgt_in, tgt_out = data.collate([m30k["train"][i] for i in range(8)], data.PAD)
    torch.manual_seed(0)
    net = rnn.RNNSearch(300, m=32, n=64, dropout=0.0, pad_id=data.PAD)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(net(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=data.PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.0 and losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("vs_rnn")
    train.main(["--experiment", "vs_rnn", "--preset", "smoke", "--out-dir", str(out)])
    return only_run_dir(out, "06_transformer")


def test_smoke_run_writes_both_arms(smoke_run, data_root):
    import sacrebleu

    card = read_summary(smoke_run)
    references = data.read_lines(data_root / "multi30k" / "test_2016_flickr.en.gz")[:20]
    for arm in ("transformer", "rnn"):
        for key in ARM_KEYS:
            assert card[f"{key}_{arm}"] is not None, f"{key}_{arm}"
        assert card[f"steps_{arm}"] == 6  # the smoke preset counts steps, not seconds
        assert (smoke_run / f"checkpoint-{arm}.pt").is_file()
        written = (smoke_run / f"translations-{arm}.txt").read_text().splitlines()
        assert len(written) == 20
        assert card[f"bleu_{arm}"] == round(sacrebleu.corpus_bleu(written, [references]).score, 2)
    assert card["value"] == pytest.approx(card["bleu_transformer"] - card["bleu_rnn"], abs=0.011)
    assert card["params_rnn"] == sum(p.numel() for p in rnn.RNNSearch(300, 16, 16).parameters())
    assert card["lr_means"] == "factor on the paper's schedule (eq. 3)"  # --lr is the Transformer's factor on eq. 3
    assert card["peak_lr"] == pytest.approx(32 ** -0.5 * 4 ** -0.5) and card["peak_lr_rnn"] == 1e-3
    rows = read_metrics(smoke_run)
    assert {r["model"] for r in rows} == {"transformer", "rnn"}
    assert {r["model"] for r in rows if r["split"] == "test"} == {"transformer", "rnn"}


def test_smoke_run_is_deterministic(smoke_run, tmp_path):
    train.main(["--experiment", "vs_rnn", "--preset", "smoke", "--out-dir", str(tmp_path)])
    again, first = read_summary(only_run_dir(tmp_path, "06_transformer")), read_summary(smoke_run)
    for key in ("valid_loss_transformer", "valid_loss_rnn", "bleu_transformer", "bleu_rnn"):
        assert again[key] == first[key], key


def test_the_budget_ends_each_arm(tmp_path, data_root, monkeypatch):
    """With a budget every arm stops at the first step that spends it (here: any step at all), and its progress
    bar counts the budget's seconds, not a step ceiling."""
    sessions = keep_sessions(monkeypatch, importlib.import_module("milestones.06_transformer.seq2seq"))  # fit() opens them
    train.main(["--experiment", "vs_rnn", "--preset", "smoke", "--steps", "0", "--budget-seconds", "1e-9",
                "--out-dir", str(tmp_path)])
    card = read_summary(only_run_dir(tmp_path, "06_transformer"))
    assert card["steps_transformer"] == card["steps_rnn"] == 1
    assert card["budget_seconds"] == 1e-9
    assert [(s.meter()["done"], s.meter()["total"], s.meter()["unit"], s.total) for s in sessions] == \
        [(1e-9, 1e-9, "s", 1)] * 2


def test_bad_input_is_one_line(tmp_path, capsys, data_root):
    for flags, says in ((["--beam", "0"], "--beam must be at least 1"),
                        (["--rnn-hidden", "0"], "--rnn-hidden must be at least 1")):
        with pytest.raises(SystemExit) as e:
            train.main(["--experiment", "vs_rnn", "--preset", "smoke", "--out-dir", str(tmp_path), *flags])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error:") and says in err and len(err.splitlines()) == 1
