"""Translation data for the Transformer: Multi30k German -> English, a joint BPE vocabulary, token-count
batches, and the copy task.

    d = load_multi30k()            # {"train", "val", "test": datasets.Dataset, "tokenizer", "raw"}
    d["train"][0]                  # {"id", "src", "tgt", "src_len", "tgt_len"} as torch tensors
    batches = TokenBatches(d["train"]["src_len"][:], d["train"]["tgt_len"][:], max_tokens=50000, count="real")
    for idx in batches.batches(epoch):
        src, tgt_in, tgt_out = collate(d["train"][idx], PAD)   # (B, S), (B, T), (B, T)

Multi30k task 1 (Elliott et al. 2016) is 31k image captions with one German and one English sentence each:
29,000 pairs to train on, 1,014 to validate, and the 2016 Flickr test set of 1,000. The files are read raw
(no tokenisation, no lowercasing: the newline is the only thing removed), so BLEU can be computed against
the references exactly as they were written.

The paper shares one vocabulary between source and target ("a shared source-target vocabulary of about
37000 tokens", byte-pair encoding of Sennrich et al. 2016), so one BPE model is trained on the German and
the English training sentences together. It is byte-level (the GPT-2 pre-tokeniser: text is bytes, a space
is part of the word after it), so decoding gives back the input string exactly, whatever its spacing or
characters, and no test word is ever <unk>. Ids 0-3 are <pad>, <bos>, <eos>, <unk>.

Sources are `ids + [<eos>]`, targets `[<bos>] + ids + [<eos>]`; the decoder reads tgt[:-1] and predicts
tgt[1:].
"""

import contextlib
import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from common.data import cache_dir, data_root, fetch
from common.data.root import offline
from common.errors import UserError

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD, BOS, EOS, UNK = range(4)

SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}  # our name -> the file's stem
MD5 = {"train.de.gz": "81ff90b99829c0cd4b1b587d394afd39", "train.en.gz": "0065d13af80720a55ca8153d126e6627",
       "val.de.gz": "6e0e229eb049e3fc99a1ef02fb2d5f91", "val.en.gz": "2b69aa9253948ac9f67e94917272dd40",
       "test_2016_flickr.de.gz": "efd67d314d98489b716b145475101932",
       "test_2016_flickr.en.gz": "ff2c0fcb4893a13bd73414306bc250ae"}
SHA256 = {"train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
          "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
          "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
          "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
          "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
          "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"}
MIRRORS = ["https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"]  # the dataset's own repo

HUB = {"multi30k": ("bentrevett/multi30k", None, {"train": "train", "val": "validation", "test": "test"}),
       "wmt14": ("wmt/wmt14", "de-en", {"train": "train", "val": "validation", "test": "test"})}


# ---------------------------------------------------------------------------------------------------------
# Raw sentence pairs
# ---------------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_lines(path: Path) -> list[str]:
    """The lines of a gzipped UTF-8 text file, each without its newline and otherwise untouched."""
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def multi30k_files(data_dir=None, download: bool = True) -> dict:
    """Split -> (German file, English file) under <data root>/multi30k/, each checked against its MD5 and
    SHA256 (downloaded from the Multi30k repository when missing, unless offline)."""
    folder = data_root(data_dir) / "multi30k"
    names = [f"{stem}.{lang}.gz" for stem in SPLITS.values() for lang in ("de", "en")]
    paths = dict(zip(names, fetch(folder, [(n, MD5[n]) for n in names], MIRRORS, download=download)))
    for name, path in paths.items():
        if _sha256(path) != SHA256[name]:
            raise UserError(f"{path}: sha256 is not {SHA256[name]}; not the Multi30k task 1 raw file")
    return {split: (paths[f"{stem}.de.gz"], paths[f"{stem}.en.gz"]) for split, stem in SPLITS.items()}


def read_multi30k(data_dir=None, download: bool = True) -> dict:
    """Split -> (German sentences, English sentences), aligned line by line."""
    raw = {}
    for split, (de_path, en_path) in multi30k_files(data_dir, download).items():
        de, en = read_lines(de_path), read_lines(en_path)
        if len(de) != len(en):
            raise UserError(f"{de_path} has {len(de)} lines but {en_path} has {len(en)}; the pair is not aligned")
        raw[split] = (de, en)
    return raw


# ---------------------------------------------------------------------------------------------------------
# Hugging Face `datasets`, kept off the network and inside our cache
# ---------------------------------------------------------------------------------------------------------

_SWITCHED_OFF = []  # set once a local load has turned the hub off in this process


def _hf_datasets(hub: bool = False):
    """Import `datasets` with its cache under $MILESTONES_CACHE and, unless `hub`, the hub switched off
    (a local load must never reach the network)."""
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache_dir() / "huggingface"))
    if not hub:
        os.environ["HF_DATASETS_OFFLINE"] = "1"  # read when `datasets` is imported ...
    import datasets
    if not hub:
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True  # ... or imported already
        _SWITCHED_OFF.append(True)
    elif _SWITCHED_OFF:  # our own earlier local load switched it off: switch it back on for this hub load
        os.environ.pop("HF_DATASETS_OFFLINE", None)
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = False
        _SWITCHED_OFF.clear()
    return datasets


@contextlib.contextmanager
def _quiet(datasets):
    """No `datasets` progress bars for our sub-second maps; the caller's setting is restored afterwards."""
    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def read_hub(name: str, src_lang: str, tgt_lang: str) -> tuple[dict, str]:
    """Split -> (source sentences, target sentences) of a hub copy ("multi30k" or "wmt14"), and a cache key.

    Needs the network once (the files then live in our cache); offline it is a UserError, never an attempt.
    """
    repo, config, splits = HUB[name]
    if offline():
        raise UserError(f"{name} from the Hugging Face hub ({repo}) needs the network, and MILESTONES_OFFLINE is "
                        f"set; use the local Multi30k files (source='local')")
    datasets = _hf_datasets(hub=True)
    try:
        dd = datasets.load_dataset(repo, config, cache_dir=str(cache_dir() / "huggingface"))
    except Exception as e:  # no network, hub down, renamed repository
        raise UserError(f"could not load {repo} from the Hugging Face hub ({type(e).__name__}: {e})") from None
    raw = {}
    for ours, theirs in splits.items():
        ds = dd[theirs]
        if "translation" in ds.column_names:  # WMT: {"translation": {"de": ..., "en": ...}}
            rows = list(ds["translation"])
            raw[ours] = ([r[src_lang] for r in rows], [r[tgt_lang] for r in rows])
        else:  # bentrevett/multi30k: {"de": ..., "en": ...}
            raw[ours] = (list(ds[src_lang]), list(ds[tgt_lang]))
    key = hashlib.sha1("|".join(dd[s]._fingerprint for s in splits.values()).encode()).hexdigest()[:12]
    return raw, f"{name}-{src_lang}{tgt_lang}-hub-{key}"


# ---------------------------------------------------------------------------------------------------------
# The joint BPE vocabulary
# ---------------------------------------------------------------------------------------------------------

def train_bpe(texts, vocab_size: int = 8000):
    """A byte-level BPE tokenizer learnt from `texts` (an iterable of sentences), ids 0-3 the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < len(SPECIALS) + 256:
        raise UserError(f"--vocab-size must be at least {len(SPECIALS) + 256} (4 specials + 256 bytes), "
                        f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # no space invented at the start
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    assert [tok.token_to_id(s) for s in SPECIALS] == [PAD, BOS, EOS, UNK]
    return tok


def save_tokenizer(tok, path) -> None:
    """Write the tokenizer as the `tokenizers` library's JSON (atomically: a crash leaves no half file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(tok.to_str())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a tokenizer is not a secret
    os.replace(tmp, path)


def load_tokenizer(path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no tokenizer at {path} (a run saves its tokenizer.json next to its checkpoint)")
    return Tokenizer.from_file(str(path))


def cached_bpe(key: str, texts, vocab_size: int):
    """train_bpe(texts) once per (corpus key, vocabulary size); later calls read the JSON back."""
    path = cache_dir() / f"{key}-bpe{vocab_size}.json"
    if path.is_file():
        try:
            return load_tokenizer(path)
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is retrained, never fatal
    tok = train_bpe(texts, vocab_size)
    save_tokenizer(tok, path)
    return tok


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """BPE ids of each text, without special tokens."""
    return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def decode_ids(tokenizer, ids) -> str:
    """The text of one id sequence: read up to the first <eos>, drop <pad>/<bos>/<unk>, undo the byte mapping."""
    ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
    if EOS in ids:
        ids = ids[:ids.index(EOS)]
    return tokenizer.decode([i for i in ids if i >= len(SPECIALS)], skip_special_tokens=False)


# ---------------------------------------------------------------------------------------------------------
# Splits as torch-formatted `datasets.Dataset`s
# ---------------------------------------------------------------------------------------------------------

def load_multi30k(data_dir=None, vocab_size: int = 8000, max_len: int = None, source: str = "local",
                  download: bool = True) -> dict:
    """Multi30k German -> English, tokenised with a joint BPE vocabulary learnt on its training split.

    Returns {"train", "val", "test": torch-formatted datasets.Dataset with columns id (line number), src, tgt,
    src_len, tgt_len; "tokenizer"; "raw": split -> (German lines, English lines)}. max_len drops training
    pairs whose source or target (with <bos>/<eos>) is longer; validation and test are never filtered.
    source="hub" reads the `bentrevett/multi30k` copy from the Hugging Face hub instead of the files.
    """
    if source == "local":
        raw = read_multi30k(data_dir, download)
        digest = hashlib.sha1("".join(SHA256[n] for n in sorted(SHA256)).encode()).hexdigest()[:12]
        key = f"multi30k-deen-{digest}"
    elif source == "hub":
        raw, key = read_hub("multi30k", "de", "en")
    else:
        raise UserError(f"source must be 'local' or 'hub', got {source!r}")
    return build_splits(raw, key, vocab_size, max_len)


def load_wmt14(vocab_size: int = 37000, max_len: int = None, src_lang: str = "en", tgt_lang: str = "de") -> dict:
    """WMT 2014 English -> German (the paper's first task: 4.5M pairs, newstest2013 to validate, newstest2014
    to test) from the Hugging Face hub, in the same form as load_multi30k. The paper's vocabulary is 37000."""
    if {src_lang, tgt_lang} != {"de", "en"}:
        raise UserError(f"WMT14 de-en has the languages de and en, got {src_lang}->{tgt_lang}")
    raw, key = read_hub("wmt14", src_lang, tgt_lang)
    return build_splits(raw, key, vocab_size, max_len)


def build_splits(raw: dict, key: str, vocab_size: int, max_len: int = None) -> dict:
    """raw: split -> (source sentences, target sentences) -> the dict load_multi30k returns.

    The BPE model and each tokenised split are cached under $MILESTONES_CACHE, keyed by the corpus (its
    file checksums), the vocabulary size and the tokenizer itself.
    """
    if max_len is not None and max_len < 3:
        raise UserError(f"--max-len must be at least 3 (<bos>, one token, <eos>), got {max_len}")
    datasets = _hf_datasets()
    train_src, train_tgt = raw["train"]
    tok = cached_bpe(key, train_src + train_tgt, vocab_size)  # one vocabulary for both languages
    tok_hash = hashlib.sha1(tok.to_str().encode()).hexdigest()[:12]
    folder = cache_dir() / "huggingface" / "tokenised"
    folder.mkdir(parents=True, exist_ok=True)

    def tokenise(batch):
        src = [ids + [EOS] for ids in encode(tok, batch["src_text"])]
        tgt = [[BOS] + ids + [EOS] for ids in encode(tok, batch["tgt_text"])]
        return {"src": src, "tgt": tgt, "src_len": [len(s) for s in src], "tgt_len": [len(t) for t in tgt]}

    splits = datasets.DatasetDict({split: datasets.Dataset.from_dict(
        {"id": list(range(len(s))), "src_text": s, "tgt_text": t}) for split, (s, t) in raw.items()})
    out = {}
    with _quiet(datasets):
        for split, ds in splits.items():
            name = f"{key}-bpe{vocab_size}-{tok_hash}-{split}"
            ds = ds.map(tokenise, batched=True, batch_size=2000, remove_columns=["src_text", "tgt_text"],
                        cache_file_name=str(folder / f"{name}.arrow"), load_from_cache_file=True,
                        new_fingerprint=name)
            ds = ds.with_format("torch")
            if split == "train" and max_len is not None:
                keep = (ds["src_len"][:] <= max_len) & (ds["tgt_len"][:] <= max_len)
                ds = ds.select(keep.nonzero().squeeze(1).tolist())
                if len(ds) == 0:
                    raise UserError(f"--max-len {max_len} leaves no training pair")
            out[split] = ds
    return {**out, "tokenizer": tok, "raw": raw}


def pairs(ds) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All (src, tgt) rows of a split as int64 tensors in memory, so collate needs no Arrow read per batch."""
    table = ds.with_format("arrow")[:]

    def rows(column):  # one Arrow list column -> a list of tensors (views into one flat buffer)
        arr = table[column].combine_chunks()
        flat = torch.tensor(arr.flatten().to_numpy(zero_copy_only=False), dtype=torch.long)  # a copy
        return torch.split(flat, arr.value_lengths().to_numpy(zero_copy_only=False).tolist())

    return list(zip(rows("src"), rows("tgt")))


# ---------------------------------------------------------------------------------------------------------
# The copy task: seconds to learn, and the same shape as a translation corpus
# ---------------------------------------------------------------------------------------------------------

def copy_task(n: int, lengths: tuple[int, int] = (1, 10), vocab: int = 16, seed: int = 0):
    """n random sequences that the decoder must copy: src = x + [<eos>], tgt = [<bos>] + x + [<eos>], with
    len(x) uniform in lengths (inclusive) and the symbols of x uniform in [4, vocab) (0-3 are the specials).

    A torch-formatted datasets.Dataset with the columns of a load_multi30k split, so one training loop runs both.
    """
    lo, hi = lengths
    if not 1 <= lo <= hi:
        raise UserError(f"copy task lengths must satisfy 1 <= min <= max, got {lengths}")
    if vocab <= len(SPECIALS):
        raise UserError(f"copy task vocabulary must exceed the {len(SPECIALS)} special tokens, got {vocab}")
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    xs = [torch.randint(len(SPECIALS), vocab, (k,), generator=g).tolist() for k in lens]
    src = [x + [EOS] for x in xs]
    tgt = [[BOS] + x + [EOS] for x in xs]
    datasets = _hf_datasets()
    ds = datasets.Dataset.from_dict({"id": list(range(n)), "src": src, "tgt": tgt,
                                     "src_len": [len(s) for s in src], "tgt_len": [len(t) for t in tgt]})
    return ds.with_format("torch")


# ---------------------------------------------------------------------------------------------------------
# Token-count batches (Section 5.1: "batched together by approximate sequence length")
# ---------------------------------------------------------------------------------------------------------

class TokenBatches:
    """Batches of about `max_tokens` tokens, source and target together, over all ranks together.

    count="real" (the paper, sec. 5.1: "approximately 25000 source tokens and 25000 target tokens"): a batch
    holds at most max_tokens / 2 real (non-pad) source tokens and at most max_tokens / 2 real target tokens,
    counted as the model sees them: a source's ids and its <eos> (src_len), a target's tokens to predict,
    y_1 .. y_n <eos> (tgt_len - 1, the decoder's output). The paper's batch is max_tokens=50000, count="real".
    count="padded" (ours, the default): n * (longest source + longest target) stays within max_tokens, so the
    padded tensors, and with them the step's compute and memory, are bounded instead.

    Pairs are sorted by (source length, target length), ties broken by a permutation drawn from `seed`, and
    cut into consecutive groups within the cap. The groups are fixed; each epoch visits them in a new order
    drawn from (seed, epoch).

    Under DDP every batch holds a multiple of world_size pairs, rank r taking every world_size-th one (so the
    ranks get equally many batches, of equal row counts and similar lengths). When the number of pairs is not
    a multiple of world_size, the last few pairs of the sorted order are repeated to fill the last group, as
    torch's DistributedSampler does; with world_size=1 every pair appears exactly once per epoch.
    """

    COUNTS = ("real", "padded")

    def __init__(self, src_lens, tgt_lens, max_tokens: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, count: str = "padded"):
        src = torch.as_tensor(src_lens, dtype=torch.long).flatten()
        tgt = torch.as_tensor(tgt_lens, dtype=torch.long).flatten()
        if len(src) != len(tgt) or len(src) == 0:
            raise UserError(f"TokenBatches needs as many target lengths as source lengths, at least one "
                            f"(got {len(src)} and {len(tgt)})")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside 0..{world_size - 1}")
        if count not in self.COUNTS:
            raise UserError(f"batching must be one of {', '.join(self.COUNTS)}, got {count!r}")
        if count == "real":
            longest, room = int(max(src.max(), tgt.max() - 1)), max_tokens // 2  # the longer side of one pair
        else:
            longest, room = int(src.max() + tgt.max()), max_tokens
        if room < world_size * longest:
            raise UserError(f"--batch-tokens {max_tokens} cannot hold {world_size} of the longest pair "
                            f"({longest} tokens{' a side' if count == 'real' else ''}); raise it, or drop long "
                            f"pairs with --max-len")
        self.max_tokens, self.shuffle, self.seed, self.rank, self.world_size, self.count = (
            max_tokens, shuffle, seed, rank, world_size, count)

        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(src), generator=g)  # tie-breaks
        order = order[torch.argsort(tgt[order], stable=True)]
        order = order[torch.argsort(src[order], stable=True)]  # by source length, then target length
        fill = -len(order) % world_size
        order = torch.cat([order, order[len(order) - fill:]])  # repeat the last `fill` pairs (DDP only)
        self.units = order.view(-1, world_size)  # (U, W): one pair per rank
        if count == "real":
            self.spans = self._cut(src[self.units].sum(1).tolist(), (tgt[self.units] - 1).sum(1).tolist(),
                                   lambda n, s, t: max(s, t) > max_tokens // 2, sum)
        else:
            self.spans = self._cut(src[self.units].amax(1).tolist(), tgt[self.units].amax(1).tolist(),
                                   lambda n, s, t: n * world_size * (s + t) > max_tokens, max)

    @staticmethod
    def _cut(unit_src: list, unit_tgt: list, over, combine) -> list:
        """[first unit, end unit) of each batch: consecutive units, a new batch whenever adding the next unit
        would make over(units, combined source, combined target) true (combine: sum of real tokens, or max of
        the longest lengths)."""
        spans, first, s_acc, t_acc = [], 0, 0, 0
        for u, (s, t) in enumerate(zip(unit_src, unit_tgt)):
            s2, t2 = combine((s_acc, s)), combine((t_acc, t))
            if over(u - first + 1, s2, t2):  # the batch if unit u joined
                spans.append((first, u))
                first, s2, t2 = u, s, t
            s_acc, t_acc = s2, t2
        spans.append((first, len(unit_src)))
        return spans

    def __len__(self) -> int:
        return len(self.spans)

    def order(self, epoch: int) -> list[int]:
        """The batch order of one epoch: the same on every rank, a new one each epoch."""
        if not self.shuffle:
            return list(range(len(self)))
        g = torch.Generator().manual_seed(self.seed * 2**32 + epoch)
        return torch.randperm(len(self), generator=g).tolist()

    def batches(self, epoch: int, start: int = 0):
        """This rank's batches of `epoch`, from the `start`-th on (to resume mid-epoch): lists of pair indices."""
        for b in self.order(epoch)[start:]:
            first, end = self.spans[b]
            yield self.units[first:end, self.rank].tolist()


def batch_counts(src_lens, tgt_lens, max_tokens: int, count: str) -> dict:
    """What one epoch of TokenBatches(..., max_tokens, count=count) feeds the model, per batch: the mean (and
    the largest) real and padded source tokens and target tokens (the decoder's output, tgt_len - 1), as the
    tensors src (B, S) and tgt_out (B, T) of collate hold them."""
    src, out = torch.as_tensor(src_lens).flatten(), torch.as_tensor(tgt_lens).flatten() - 1
    rows = {"real_src": [], "real_tgt": [], "padded_src": [], "padded_tgt": []}
    for idx in TokenBatches(src, out + 1, max_tokens, shuffle=False, count=count).batches(0):
        idx = torch.tensor(idx)
        rows["real_src"].append(int(src[idx].sum()))
        rows["real_tgt"].append(int(out[idx].sum()))
        rows["padded_src"].append(len(idx) * int(src[idx].max()))  # B * S
        rows["padded_tgt"].append(len(idx) * int(out[idx].max()))  # B * T
    real, padded = sum(rows["real_src"] + rows["real_tgt"]), sum(rows["padded_src"] + rows["padded_tgt"])
    return dict(batches=len(rows["real_src"]), real_share=real / padded,
                **{k: sum(v) / len(v) for k, v in rows.items()}, **{f"{k}_max": max(v) for k, v in rows.items()})


def collate(rows, pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch: src (B, S) int64, and the target split into decoder input tgt[:-1] and output tgt[1:],
    each (B, T). `rows` is a dataset slice (dict of columns), a list of {"src", "tgt"} rows, or (src, tgt) pairs."""
    if isinstance(rows, dict):
        rows = list(zip(rows["src"], rows["tgt"]))
    elif rows and isinstance(rows[0], dict):
        rows = [(r["src"], r["tgt"]) for r in rows]
    if not rows:
        raise ValueError("collate got an empty batch")
    src = pad_sequence([torch.as_tensor(s, dtype=torch.long) for s, _ in rows], batch_first=True,
                       padding_value=pad_id)  # (B, S)
    tgt = pad_sequence([torch.as_tensor(t, dtype=torch.long) for _, t in rows], batch_first=True,
                       padding_value=pad_id)  # (B, T + 1)
    return src, tgt[:, :-1], tgt[:, 1:]


def dynamic_shapes(*batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The batch's tensors (on the device the model reads them from), every dimension marked dynamic for
    torch.compile. Token-count batches change (B, S, T) at every step: unmarked, dynamo compiles the first batch's
    sizes and compiles again, with symbolic sizes, at the next one (automatic dynamic shapes). Marked, the first
    compile is the symbolic one and serves every batch. The math is unchanged; padding up to a few bucket lengths
    would have recompiled as little, but the longer tensors draw other dropout masks. (CUDA graphs, --compile
    reduce-overhead, still record one graph per distinct shape.)"""
    for t in batch:
        torch._dynamo.maybe_mark_dynamic(t, list(range(t.dim())))
    return batch
