"""Train the Transformer: German -> English on Multi30k, the copy task, and a GPT on Tiny Shakespeare.

    python -m milestones train 06_transformer --preset quick                        # de->en, BLEU on test2016
    python -m milestones train 06_transformer --experiment copy --preset quick      # seconds: learn to copy
    python -m milestones train 06_transformer --experiment vs_rnn --preset quick    # vs LSTM + attention
    python -m milestones train 06_transformer --experiment ablations --preset quick # Table 3 at a CPU budget
    python -m milestones train 06_transformer --experiment charlm --preset quick    # GPT on characters
    python -m milestones sample 06_transformer --run DIR --prompt "ROMEO:"          # then write with it
"""

import copy
import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import data as corpora
from common.config import TrainConfig, arg, train_command
from common.errors import UserError
from common.loop import evaluate_lm, optimizer_step
from common.session import Session, open_run

from . import data, decode
from .cross_attention import attention_title, cross_attention_grid
from .lr import lr_line, lr_record
from .charlm import gpt_from, lr_lambda, make_adamw, tiled, windows
from .vs_lstm import run_vs_lstm
from .model import CONFIGS, IMPLS
from .seq2seq import Pairs, check_seq2seq, paper_optimizer, train_loop, transformer_from
from .vs_rnn import run_vs_rnn
from .ablations import ARMS as ABLATION_ARMS, run_ablations

MILESTONE = "06_transformer"
SEQ2SEQ = ("translate", "copy", "vs_rnn", "ablations")  # the experiments that train the encoder-decoder Transformer
TRANSLATION = ("translate", "vs_rnn", "ablations")  # ... on a translation corpus, scored with BLEU
GPT_LM = ("charlm", "vs_lstm")  # the experiments that train the character-level GPT
CORPORA = ("multi30k", "multi30k-hub", "wmt14")
BASE_BLEU = 27.3  # Table 2: Transformer (base model), WMT 2014 English-German newstest2014


@dataclass
class Config(TrainConfig):
    experiment: str = arg("translate", "what to run (the list below)")
    layers: int = arg(6, "N: encoder layers and decoder layers (charlm: GPT blocks)")
    decoder_layers: int = arg(0, "decoder layers, when not --layers (0 = the same)", only=SEQ2SEQ)
    d_model: int = arg(512, "d_model, the width of every layer")
    heads: int = arg(8, "h, attention heads")
    d_ff: int = arg(2048, "inner size of the feed-forward networks (charlm: always 4 d_model)", only=SEQ2SEQ)
    dropout: float = arg(0.1, "P_drop on every sub-layer's output and the embeddings (charlm: the attention "
                         "weights too)")
    norm: str = arg("post", "post: LayerNorm(x + Sublayer(x)), the paper; pre: x + Sublayer(LayerNorm(x))",
                    choices=("post", "pre"), only=SEQ2SEQ)
    positions: str = arg("sinusoidal", "sinusoidal (sec. 3.5) or learned (Table 3 row E)",
                         choices=("sinusoidal", "learned"), only=SEQ2SEQ)
    impl: str = arg("fast", "attention: fast (PyTorch's fused kernels), scratch (eq. 1 written out; faster on a "
                    "CPU in bf16) or auto (scratch there, else fast)",
                    choices=IMPLS + ("auto",))
    lr: float = arg(1.0, "the Transformer: a factor on eq. 3's rate (1 = the paper); the GPT (charlm, vs_lstm): "
                    "the peak AdamW rate; runs record the peak as peak_lr")
    warmup: int = arg(4000, "warm-up steps (translate/copy: of the paper's schedule, eq. 3; charlm: linear)")
    clip: float = arg(0.0, "clip the global gradient norm to this value (0 = never; the paper does not clip)")
    # translation and copying
    batch_tokens: int = arg(50000, "tokens a step, source and target together, over all ranks (the paper: "
                            "~25000 of each)", only=SEQ2SEQ)
    batching: str = arg("padded", "real: --batch-tokens / 2 real source tokens and as many target ones a step "
                        "(sec. 5.1); padded: --batch-tokens padded tokens in all", choices=data.TokenBatches.COUNTS,
                        only=SEQ2SEQ)
    label_smoothing: float = arg(0.1, "epsilon_ls of sec. 5.4", only=SEQ2SEQ)
    corpus: str = arg("multi30k", "multi30k (de->en, under the data root), multi30k-hub (the same, from the "
                      "Hugging Face hub) or wmt14 (en->de, the paper's; hub)",
                      choices=CORPORA, only="translate")
    vocab_size: int = arg(8000, "joint BPE vocabulary (the paper: about 37000 for WMT14 en-de)", only=TRANSLATION)
    max_len: int = arg(0, "drop training pairs longer than this many tokens (0 = keep all)", only=TRANSLATION)
    average: int = arg(0, "decode with the average of the last K checkpoints (every --ckpt-every steps; the "
                       "paper: 5 for base, 20 for big); 0 = the final weights", only="translate")
    beam: int = arg(4, "beam size for the test translations (1 = greedy)", only=TRANSLATION)
    alpha: float = arg(0.6, "length penalty alpha of the beam search (Wu et al. 2016)", only=TRANSLATION)
    test_size: int = arg(0, "translate only the first N test sentences (ablations: dev sentences; 0 = all)",
                         only=TRANSLATION)
    arms: str = arg(",".join(ABLATION_ARMS), "the ablations to train, comma-separated (ablations.py)",
                    only="ablations")
    copy_length: int = arg(10, "copy task: sequences of 1 to N symbols", only="copy")
    copy_vocab: int = arg(16, "copy task: symbols 4 .. V-1 (0-3 are the special tokens)", only="copy")
    # the recurrent baseline (vs_rnn.py, rnn_seq2seq.py)
    rnn_embed: int = arg(256, "m, the RNN's embedding size (Bahdanau et al.: 620)", only="vs_rnn")
    rnn_hidden: int = arg(256, "n, the units of each encoder direction, of the decoder and of the alignment "
                          "model (Bahdanau et al.: 1000)", only="vs_rnn")
    rnn_lr: float = arg(1e-3, "the RNN's Adam learning rate, constant (--lr is the Transformer's)",
                        only="vs_rnn")
    # the character-level GPT
    context: int = arg(256, "tokens of context (block size)", only=GPT_LM)
    bias: bool = arg(False, "biases in every Linear and LayerNorm (nanoGPT's Shakespeare config: none)",
                     only=GPT_LM)
    weight_decay: float = arg(0.1, "AdamW weight decay on the weight matrices and embeddings", only=GPT_LM)
    schedule: str = arg("cosine", "after the warm-up: cosine down to lr/10 at the last step, or constant",
                        choices=("cosine", "constant"), only=GPT_LM)
    target: float = arg(1.886, "the validation loss whose first crossing is timed (seconds_to_target)",
                        only="charlm")
    sample_chars: int = arg(500, "characters sampled into samples/ at the end (0 = none)", only="charlm")
    # attention vs recurrence (vs_lstm.py)
    budget_seconds: float = arg(0.0, "train each net until it has spent this many seconds of training (CPU "
                                "seconds on a CPU, GPU seconds on a GPU; evaluation excluded); 0 = --steps steps",
                                only=("vs_lstm", "vs_rnn"))
    lstm_hidden: int = arg(0, "the LSTM's hidden units (0 = the width whose parameter count is closest to the "
                           "GPT's)", only="vs_lstm")
    lstm_layers: int = arg(2, "the LSTM's stacked layers", only="vs_lstm")
    lstm_lr: float = arg(2e-2, "the LSTM's peak AdamW learning rate (--lr is the GPT's)", only="vs_lstm")
    log_every: int = arg(100, "log the training loss and throughput every N steps (and at the last)")


# The base model's recipe, Vaswani et al. 2017: Table 3 (its shape), sec. 5.1 (a shared BPE vocabulary of about
# 37000; batches of ~25000 real source and ~25000 real target tokens), sec. 5.2 (100,000 steps at ~0.4 s a step),
# sec. 5.3 (warm-up 4000), sec. 5.4 (P_drop 0.1), sec. 6.1 (the last 5 checkpoints, written at 10-minute
# intervals, averaged: 10 min / 0.4 s = 1,500 steps). max_len 256 is ours (drops WMT's few very long pairs).
PAPER = dict(corpus="wmt14", vocab_size=37000, **{"d_model": 512, "layers": 6, "heads": 8, "d_ff": 2048},
             dropout=0.1, batch_tokens=50000, batching="real", steps=100_000, warmup=4000, lr=1.0, average=5,
             ckpt_every=1500, eval_every=2000, max_len=256)
# The big model: Table 3 (d_model 1024, h 16, d_ff 4096, P_drop 0.3), sec. 5.2 (300,000 steps at ~1.0 s a step),
# sec. 6.1 (the last 20 checkpoints averaged; 10 minutes = 600 of its steps)
PAPER_BIG = dict(PAPER, d_model=1024, heads=16, d_ff=4096, dropout=0.3, steps=300_000, average=20, ckpt_every=600)
BABY_GPT = dict(layers=6, heads=6, d_model=384, context=256, dropout=0.2, batch_size=64, lr=1e-3, steps=5000,
                warmup=100, weight_decay=0.1, eval_every=250, ckpt_every=1000)  # nanoGPT's train_shakespeare_char
VS_LSTM_GPU = dict(BABY_GPT, steps=0, budget_seconds=600, lstm_lr=1e-3, clip=1.0, eval_every=250,
                   ckpt_every=10 ** 6, precision="auto")  # the baby GPT against a 10.7M-parameter LSTM, 10 minutes

PRESETS = {
    "translate/paper": PAPER,
    "translate/big": PAPER_BIG,  # --preset big: the paper's big model (not run here)
    # one GPU, Multi30k: base width, 3 + 3 layers and dropout 0.3 (29k sentence pairs overfit the paper's 6 + 6 at
    # 0.1), ~48 epochs, the last 5 checkpoints (every 250 steps) averaged; not run here (NOTES.md)
    "translate/default": dict(d_model=512, layers=3, heads=8, d_ff=2048, dropout=0.3, vocab_size=8000,
                              batch_tokens=8000, steps=6000, warmup=2000, lr=1.0, average=5, ckpt_every=250,
                              eval_every=500, precision="auto"),
    # <= 5 minutes on a 2-core AVX2 laptop (fp32): 2 + 2 layers of d 128 and a 4,000-token BPE vocabulary (the
    # output layer was 27% of d 256's multiply-adds), ~3 epochs (540 steps of ~5000 real tokens), the last 3
    # checkpoints averaged; bf16 where native (auto) and the faster attention for the precision (auto)
    "translate/quick": dict(d_model=128, layers=2, heads=4, d_ff=512, dropout=0.1, vocab_size=4000,
                            batch_tokens=6000, steps=540, warmup=150, lr=0.5, average=3, ckpt_every=90,
                            eval_every=270, precision="auto", impl="auto", log_every=50),
    "translate/smoke": dict(d_model=32, layers=1, heads=2, d_ff=64, dropout=0.1, vocab_size=300, batch_tokens=1500,
                            steps=6, warmup=4, average=2, ckpt_every=3, eval_every=3, test_size=20,
                            log_every=2, threads=1),  # the paper's beam 4, alpha 0.6 (0.4 s for 20 sentences)
    # the copy task: the same training code, seconds
    **{f"copy/{p}": dict(d_model=64, layers=2, heads=4, d_ff=256, dropout=0.1, batch_tokens=4000, steps=400,
                         warmup=100, lr=0.3, eval_every=100, ckpt_every=400) for p in ("paper", "default", "quick")},
    "copy/smoke": dict(d_model=16, layers=1, heads=2, d_ff=32, batch_tokens=600, steps=6, warmup=4, lr=0.3,
                       eval_every=3, ckpt_every=3, log_every=2, threads=1),
    # the Transformer against an LSTM encoder-decoder with additive attention, the same batches, each trained
    # for the same seconds (NOTES.md, "Before the Transformer"). paper: the base model against Bahdanau et
    # al.'s sizes (m 620, n 1000), an hour each on one GPU; default: translate/default's Transformer, 20
    # minutes each; neither run here. quick: a 3 + 3 x 256 Transformer (8,000 BPE tokens), warm-up 150 (the
    # budget holds about 400 steps), peak rate 0.35 x eq. 3, 8 CPU minutes each. The paper presets of vs_rnn
    # and ablations batch as the paper did (--batching real, from PAPER), 4,000 real tokens a side on Multi30k
    "vs_rnn/paper": dict(PAPER, corpus="multi30k", vocab_size=8000, dropout=0.3, batch_tokens=8000, steps=0,
                         budget_seconds=3600, average=0, max_len=0, rnn_embed=620, rnn_hidden=1000,
                         eval_every=500, ckpt_every=10 ** 6, precision="auto"),
    "vs_rnn/default": dict(d_model=512, layers=3, heads=8, d_ff=2048, dropout=0.3, vocab_size=8000,
                           batch_tokens=8000, steps=0, budget_seconds=1200, warmup=2000, lr=1.0, rnn_embed=512,
                           rnn_hidden=512, eval_every=500, ckpt_every=10 ** 6, precision="auto"),
    "vs_rnn/quick": dict(d_model=256, layers=3, heads=4, d_ff=1024, dropout=0.1, vocab_size=8000,
                         batch_tokens=6000, steps=0, budget_seconds=480, warmup=150, lr=0.35, rnn_embed=256,
                         rnn_hidden=256, eval_every=100, log_every=25, ckpt_every=10 ** 6, precision="auto",
                         impl="scratch", threads=1),
    "vs_rnn/smoke": dict(d_model=32, layers=1, heads=2, d_ff=64, dropout=0.1, vocab_size=300, batch_tokens=1500,
                         steps=6, warmup=4, rnn_embed=16, rnn_hidden=16, eval_every=3, ckpt_every=3, log_every=2,
                         test_size=20, beam=1, threads=1),
    # Table 3 at a budget (ablations.py): every arm the same steps on the same batches, scored on the dev set. quick:
    # vs_rnn/quick's Transformer for 500 steps (~3 epochs) with vs_rnn's warm-up 150 at the same peak rate,
    # about 8 CPU minutes an arm; default / paper (not run here): translate/default's model, and the base model
    # at the paper's warm-up, each at half its translate preset's steps
    "ablations/paper": dict(PAPER, corpus="multi30k", vocab_size=8000, batch_tokens=8000, steps=3000, average=0,
                            max_len=0, eval_every=500, ckpt_every=10 ** 6, precision="auto"),
    "ablations/default": dict(d_model=512, layers=3, heads=8, d_ff=2048, dropout=0.3, vocab_size=8000,
                              batch_tokens=8000, steps=3000, warmup=2000, lr=1.0, eval_every=500,
                              ckpt_every=10 ** 6, precision="auto"),
    "ablations/quick": dict(d_model=256, layers=3, heads=4, d_ff=1024, dropout=0.1, vocab_size=8000,
                            batch_tokens=6000, steps=500, warmup=150, lr=0.35, eval_every=100, log_every=50,
                            ckpt_every=10 ** 6, precision="auto", impl="scratch", threads=1),
    "ablations/smoke": dict(d_model=32, layers=1, heads=2, d_ff=64, dropout=0.1, vocab_size=300, batch_tokens=1500,
                            steps=6, warmup=4, eval_every=3, ckpt_every=3, log_every=2, test_size=20, beam=1,
                            threads=1),
    "charlm/paper": BABY_GPT,
    "charlm/default": BABY_GPT,
    # beats nanoGPT's documented CPU run (4 x 128, context 64, batch 12, 2000 iters, dropout 0: val 1.8857) in
    # a third of its time: 2 x 128, batch 32, a 10x higher peak rate, bf16 where native (auto), and the faster
    # attention for that precision (auto: eq. 1 written out in bf16, the fused kernel in fp32) (NOTES.md)
    "charlm/quick": dict(layers=2, heads=4, d_model=128, context=64, dropout=0.0, batch_size=32, lr=1e-2,
                         steps=600, warmup=50, eval_every=300, ckpt_every=600, precision="auto", impl="auto",
                         threads=1, sample_chars=300),
    "charlm/smoke": dict(layers=1, heads=2, d_model=32, context=32, dropout=0.1, batch_size=8, lr=3e-3, steps=6,
                         warmup=2, eval_every=3, ckpt_every=3, log_every=2, sample_chars=50, threads=1),
    # attention vs recurrence: the GPT as charlm's, the LSTM as wide as makes the parameter counts equal, the
    # same batches, each net trained for the same seconds (NOTES.md, "Attention vs recurrence")
    "vs_lstm/paper": VS_LSTM_GPU,
    "vs_lstm/default": VS_LSTM_GPU,
    "vs_lstm/quick": dict(layers=2, heads=4, d_model=128, context=64, dropout=0.0, batch_size=32, lr=1e-2,
                          warmup=50, budget_seconds=150, lstm_lr=2e-2, clip=1.0, eval_every=200, log_every=50,
                          ckpt_every=10 ** 6, precision="auto", impl="auto", threads=1),
    "vs_lstm/smoke": dict(layers=1, heads=2, d_model=32, context=32, dropout=0.1, batch_size=8, lr=3e-3,
                          lstm_lr=3e-3, clip=1.0, steps=6, warmup=2, eval_every=3, ckpt_every=3, log_every=2,
                          threads=1),
}


# ---------------------------------------------------------------------------------------------------------
# Translation and copying: one training loop for both
# ---------------------------------------------------------------------------------------------------------

def transformer_name(cfg: Config) -> str:
    layers = f"{cfg.layers}+{cfg.decoder_layers or cfg.layers}"
    shape = dict(d_model=cfg.d_model, n_layers=cfg.layers, h=cfg.heads, d_ff=cfg.d_ff)
    named = next((n for n, c in CONFIGS.items() if all(c[k] == v for k, v in shape.items())
                  and not cfg.decoder_layers), None)
    return f"transformer-{named}" if named else f"transformer-{layers}x{cfg.d_model}-h{cfg.heads}"


def train_seq2seq(cfg: Config, rt, run, splits: dict, vocab_size: int, max_len: int):
    """Train a Transformer on splits["train"] with the paper's recipe; returns (session, model, kept weights).

    Adam(0.9, 0.98, 1e-9), the warm-up-then-inverse-square-root rate of eq. 3, label smoothing, token-count
    batches, validation NLL at each eval point. With --average K the weights at each checkpoint are kept
    (the last K of them) in the run directory."""
    train = Pairs(splits["train"], cfg.batch_tokens, rt, shuffle=True, seed=cfg.seed, count=cfg.batching)
    valid = Pairs(splits["val"], cfg.batch_tokens, rt, shuffle=False, count=cfg.batching)
    model = transformer_from(vars(cfg), vocab_size, max_len).to(rt.device)
    opt, sched = paper_optimizer(model, cfg)  # sec. 5.3, eq. 3
    scaler = rt.grad_scaler()
    total = cfg.steps or cfg.epochs * len(train)
    sess = Session(cfg, rt, run, total, len(train), unit="tokens")
    sess.attach(model, opt, sched, scaler, extra=lambda: dict(vocab_size=vocab_size, max_len=max_len))
    keep = KeptWeights(run.dir, cfg.average, cfg.ckpt_every, total, rt)
    train_loop(sess, cfg, rt, model, train, valid, opt, sched, scaler, cfg.clip, keep=keep)
    return sess, model, keep


class KeptWeights:
    """The model's weights at the last K checkpoints, as weights-<step>.pt in the run directory (rank 0), and
    their average (Vaswani et al.: "averaging the last 5 checkpoints")."""

    def __init__(self, run_dir, k: int, every: int, total: int, rt):
        self.dir, self.k, self.every, self.total, self.rt = run_dir, k, every, total, rt

    def files(self) -> list:
        return sorted(self.dir.glob("weights-*.pt"))

    def add(self, model, step: int) -> None:
        """Keep the weights after `step` if it is a checkpoint step: the last, and every `every` steps before
        it (so the averaged ones are equally spaced, as the paper's were: 10 minutes apart)."""
        if self.k < 1 or not self.rt.is_main or (self.total - step) % self.every:
            return
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        tmp = self.dir / f"weights-{step:08d}.pt.tmp"
        torch.save({"model": state, "step": step}, tmp)
        tmp.replace(self.dir / f"weights-{step:08d}.pt")
        for old in self.files()[:-self.k]:
            old.unlink()

    def averaged(self, model):
        """(a copy of `model` holding the average of the kept weights, their steps); (`model`, [its step]) when
        fewer than two are kept. Every rank reads the files; rank 0 also writes averaged.pt."""
        if self.rt.distributed:  # rank 0 has written the last file
            torch.distributed.barrier()
        files = self.files()[-self.k:] if self.k > 0 else []
        states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
        steps = [s["step"] for s in states]
        if len(states) < 2:
            return model, steps
        mean = {k: sum(s["model"][k].double() for s in states) / len(states) for k in states[0]["model"]}
        avg = copy.deepcopy(model)  # the training state (checkpoint.pt) keeps the last weights
        avg.load_state_dict({k: v.to(states[0]["model"][k].dtype) for k, v in mean.items()})
        if self.rt.is_main:
            torch.save({"model": avg.state_dict(), "steps": steps}, self.dir / "averaged.pt")
        return avg, steps


def run_translate(cfg: Config, rt, argv) -> dict:
    """German -> English on Multi30k (or the paper's WMT14 en->de): the Transformer, beam search, sacreBLEU"""
    check_seq2seq(cfg)
    if cfg.beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {cfg.beam}")
    if cfg.average < 0 or cfg.test_size < 0 or cfg.max_len < 0:
        raise UserError("--average, --test-size and --max-len must be >= 0")
    max_len = cfg.max_len or None
    if cfg.corpus == "wmt14":
        splits = data.load_wmt14(cfg.vocab_size, max_len)
        src_lang, tgt_lang, dataset = "en", "de", "WMT14 en-de (newstest2014)"
    else:
        splits = data.load_multi30k(cfg.data_dir, cfg.vocab_size, max_len,
                                    source="hub" if cfg.corpus == "multi30k-hub" else "local")
        src_lang, tgt_lang, dataset = "de", "en", "Multi30k de-en (test_2016_flickr)"
    tok = splits["tokenizer"]
    longest = max(int(splits[s][c][:].max()) for s in ("train", "val", "test") for c in ("src_len", "tgt_len"))
    positions = longest + decode.EXTRA_LENGTH + 1  # the decoder may write up to source length + 50 tokens
    run = open_run(cfg, rt, MILESTONE, transformer_name(cfg), argv)
    run_dir = run.dir
    if rt.is_main:
        data.save_tokenizer(tok, run_dir / "tokenizer.json")  # for `sample`, even if the run is interrupted
        print(lr_line(cfg, lr_record(cfg, schedule=True)))
    sess, model, keep = train_seq2seq(cfg, rt, run, splits, tok.get_vocab_size(), positions)
    final, averaged = keep.averaged(model)

    sources, references = splits["raw"]["test"]
    n = min(cfg.test_size or len(sources), len(sources))
    test_ids = [row["src"] for row in splits["test"].select(range(n))]
    t0 = time.time()
    with rt.autocast():
        hyps = decode.translate(final, test_ids, data.BOS, data.EOS, data.PAD, cfg.beam, cfg.alpha)
    decode_seconds = time.time() - t0
    translations = [data.decode_ids(tok, h) for h in hyps]  # detokenised: the byte-level BPE gives the text back
    cased, lower = decode.bleu(translations, references[:n]), decode.bleu(translations, references[:n], True)
    if rt.is_main:
        (run_dir / "translations.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in translations))
        cross_attention_grid(final, test_ids[0], hyps[0], tok, run_dir / "cross_attention.png",
                             title=attention_title(vars(cfg), sources[0], translations[0]))
    sess.log("test", bleu=cased["score"], bleu_lowercase=lower["score"], sentences=n,
             decode_seconds=round(decode_seconds, 1))
    paper = BASE_BLEU if cfg.corpus == "wmt14" else None
    card = sess.summary(
        dataset=dataset if n == len(sources) else f"{dataset}, first {n} test sentences", metric="BLEU",
        value=round(cased["score"], 2), paper_value=paper,
        paper_source="Vaswani et al. 2017, Table 2 (base, EN-DE newstest2014)" if paper else None,
        bleu_signature=cased["signature"], bleu_lowercase=round(lower["score"], 2),
        valid_loss=sess.results.get("valid_loss"), beam=cfg.beam, alpha=cfg.alpha, averaged_steps=averaged,
        direction=f"{src_lang}->{tgt_lang}", decode_seconds=round(decode_seconds, 1), **lr_record(cfg, schedule=True))
    if rt.is_main:
        print(f"{sess.run.model}: BLEU {cased['score']:.2f} ({cased['signature']}), lowercased {lower['score']:.2f}, "
              f"on {n} test sentences; {card['train_seconds']:.0f} s, {sess.rate:,.0f} tokens/s; "
              f"run record: {run_dir}")
    return card


def run_copy(cfg: Config, rt, argv) -> dict:
    """the copy task (generated): the translation loop learns to copy; exact-match accuracy of greedy decoding"""
    check_seq2seq(cfg)
    if cfg.copy_length < 1 or cfg.copy_vocab <= len(data.SPECIALS):
        raise UserError(f"--copy-length must be >= 1 and --copy-vocab > {len(data.SPECIALS)}")
    lengths = (1, cfg.copy_length)
    splits = {"train": data.copy_task(20000, lengths, cfg.copy_vocab, seed=cfg.seed),
              "val": data.copy_task(500, lengths, cfg.copy_vocab, seed=cfg.seed + 1)}
    held_out = data.copy_task(500, lengths, cfg.copy_vocab, seed=cfg.seed + 2)
    run = open_run(cfg, rt, MILESTONE, f"copy-{transformer_name(cfg)}", argv)
    if rt.is_main:
        print(lr_line(cfg, lr_record(cfg, schedule=True)))
    sess, model, _ = train_seq2seq(cfg, rt, run, splits, cfg.copy_vocab, 2 * cfg.copy_length + 64)
    sources = [row["src"] for row in held_out]
    hyps = decode.translate(model, sources, data.BOS, data.EOS, data.PAD, beam=1, max_len=cfg.copy_length + 1)
    exact = sum(h == s[:-1].tolist() for h, s in zip(hyps, sources)) / len(sources)  # s ends with <eos>
    sess.log("test", exact_match=exact)
    card = sess.summary(dataset=f"copy task (generated, lengths 1-{cfg.copy_length}, {cfg.copy_vocab - 4} symbols)",
                        metric="exact_match (greedy)", value=round(exact, 4), paper_value=None, paper_source=None,
                        valid_loss=sess.results.get("valid_loss"), **lr_record(cfg, schedule=True))
    if rt.is_main:
        print(f"{sess.run.model}: {exact:.1%} of {len(sources)} held-out sequences copied exactly; "
              f"{card['train_seconds']:.0f} s; run record: {sess.run.dir}")
    return card


# ---------------------------------------------------------------------------------------------------------
# GPT on Tiny Shakespeare
# ---------------------------------------------------------------------------------------------------------

def run_charlm(cfg: Config, rt, argv) -> dict:
    """GPT on Tiny Shakespeare characters (nanoGPT's baby GPT); then `python -m milestones sample 06_transformer`"""
    for name in ("layers", "d_model", "heads", "context", "warmup"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.heads:
        raise UserError(f"--d-model {cfg.d_model} is not divisible by --heads {cfg.heads}")
    if cfg.batch_size % rt.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by {rt.world_size} ranks")
    corpus = corpora.load("tinyshakespeare", cfg.data_dir)
    vocab = corpus["vocab"]
    train, valid = corpus["train"].to(rt.device), corpus["valid"].to(rt.device)
    val_batches = tiled(valid, cfg.context, 64, rt)
    model = gpt_from(vars(cfg), len(vocab)).to(rt.device)
    opt = make_adamw(model, cfg, rt.device)
    total = cfg.steps or cfg.epochs * (len(train) // (cfg.batch_size * cfg.context))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    scaler = rt.grad_scaler()
    name = f"gpt-{cfg.layers}x{cfg.d_model}-ctx{cfg.context}"
    steps_per_epoch = max(1, len(train) // (cfg.batch_size * cfg.context))  # an "epoch": as many characters as the text
    sess = Session(cfg, rt, open_run(cfg, rt, MILESTONE, name, argv), total, steps_per_epoch, unit="tokens")
    if rt.is_main:
        print(lr_line(cfg, lr_record(cfg, schedule=False)))
    sess.attach(model, opt, sched, scaler, extra=lambda: dict(vocab=vocab))
    net = rt.wrap(model, compile=cfg.compile)
    local = cfg.batch_size // rt.world_size
    with sess:
        while sess.running:
            seed = (cfg.seed * 1_000_003 + sess.step_count) * 1024 + rt.rank  # the batch depends on the step alone
            x, y = windows(train, local, cfg.context, seed)
            with rt.autocast():
                logits = net(x)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            optimizer_step(loss, opt, scaler, cfg.clip, model.parameters())
            sched.step()
            sess.step(cfg.batch_size * cfg.context)
            if sess.due("log"):
                sess.log("train", loss=loss, lr=sched.get_last_lr()[0])
            if sess.due("eval"):
                val = evaluate_lm(net, val_batches, rt)
                sess.mark_target(val, cfg.target, cfg.batch_size * cfg.context)
                sess.log("valid", loss=val)
    val = sess.results["valid_loss"]
    reached = sess.reached()
    card = sess.summary(dataset="Tiny Shakespeare (last 10% = validation)", metric="val_loss (nats/char)",
                        value=round(val, 4), paper_value=1.4697 if cfg.preset in ("default", "paper") else None,
                        paper_source="nanoGPT README, baby GPT on Tiny Shakespeare (A100)"
                        if cfg.preset in ("default", "paper") else None,
                        target=cfg.target, **reached, **lr_record(cfg, schedule=False))
    if rt.is_main and cfg.sample_chars > 0:
        from common.data.text import decode as decode_chars
        model.eval()
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        with rt.autocast():
            out = model.generate(torch.zeros(1, 1, dtype=torch.long, device=rt.device), cfg.sample_chars,
                                 temperature=0.8, generator=g)
        text = decode_chars(out[0].tolist(), vocab, False)
        (sess.run.dir / "samples").mkdir(exist_ok=True)
        (sess.run.dir / "samples" / "sample.txt").write_text(text)
        print(f"--- sample (temperature 0.8) ---\n{text}\n---")
    if rt.is_main:
        hit = (f"val <= {cfg.target} at step {reached['steps_to_target']}, {reached['seconds_to_target']:.1f} s "
               f"after the process started" if reached["steps_to_target"] else f"val never <= {cfg.target}")
        print(f"{name}: val loss {val:.4f} nats/char; {hit}; {card['train_seconds']:.0f} s, {sess.rate:,.0f} "
              f"tokens/s; run record: {sess.run.dir}")
    return card


def resolve_impl(impl: str, rt) -> str:
    """--impl auto: eq. 1 written out where a CPU autocasts to bf16 (there the fused kernel's bf16 backward is
    the slow part of a step), PyTorch's fused kernels everywhere else (NOTES.md, the char-LM race)."""
    if impl != "auto":
        return impl
    return "scratch" if rt.device.type == "cpu" and rt.precision == "bf16" else "fast"


def resolving_impl(run):
    """The experiment `run`, after --impl auto has become the implementation this device runs (so the run's
    config.json records which one ran)."""
    @functools.wraps(run)
    def run_with_impl(cfg: Config, rt, argv) -> dict:
        cfg.impl = resolve_impl(cfg.impl, rt)
        return run(cfg, rt, argv)
    return run_with_impl


EXPERIMENTS = {name: resolving_impl(run) for name, run in [
    ("translate", run_translate), ("copy", run_copy), ("charlm", run_charlm), ("vs_lstm", run_vs_lstm),
    ("vs_rnn", run_vs_rnn), ("ablations", run_ablations)]}


def main(argv=None, prog="python -m milestones train 06_transformer"):
    return train_command(Config, PRESETS, EXPERIMENTS, argv, prog, __doc__, MILESTONE, preset_help={
        "big": "The paper's big model (d_model 1024, 16 heads, 300k steps); not run here."}, experiment_help={
        "vs_rnn": "An LSTM encoder-decoder with Bahdanau's attention against the Transformer, same batches, equal "
                  "training budget; BLEU of both.",
        "ablations": "Table 3 at a CPU budget: one head, no label smoothing, learned positions, pre-LN without "
                     "warm-up, each against the base model."})


if __name__ == "__main__":
    main()
