"""Turning a trained Transformer into translations: greedy decoding, beam search, and corpus BLEU.

Both decoders need only two calls of the model:

    memory, src_keep = model.encode(src)              # (B, S, d), (B, 1, 1, S) bool
    logits = model.decode(tgt_in, memory, src_keep)   # (B, T) prefix -> (B, T, V)

By default they re-read the whole prefix at every step, which any such model supports. A model that also
keeps a key/value cache (decode(..., cache) accepting only the newest token, plus
reorder_cache(cache, rows) to follow the surviving rows) is decoded incrementally with cache=True: the
same outputs, in one decoder step per token instead of a re-read of the prefix.

Section 6.1 of the paper: "We used beam search with a beam size of 4 and length penalty alpha = 0.6 ...
We set the maximum output length during inference to input length + 50, but terminate early when
possible." The length penalty is Wu et al. 2016 (Google's NMT system, eq. 14): a hypothesis Y is ranked by

    s(Y) = log P(Y | X) / lp(Y),        lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha

where |Y| counts the generated tokens including the final <eos>. alpha = 0 ranks by log-probability alone
(which favours short outputs); larger alpha favours longer ones.
"""

import torch
import torch.nn.functional as F

from common.errors import UserError

EXTRA_LENGTH = 50  # "input length + 50"


def length_penalty(length, alpha: float):
    """lp(Y) = ((5 + |Y|) / 6)^alpha  (Wu et al. 2016, eq. 14)."""
    return ((5 + length) / 6) ** alpha


def _limits(model, src_keep: torch.Tensor, max_len) -> torch.Tensor:
    """Most tokens each sentence may generate: max_len, or its source length + 50 (the paper), and never more
    positions than the model has (its max_len attribute, if any). (B,) on CPU."""
    B = src_keep.shape[0]
    if max_len is not None:
        if max_len < 1:
            raise UserError(f"max_len must be at least 1, got {max_len}")
        limit = torch.full((B,), int(max_len))
    else:
        limit = src_keep.reshape(B, -1).sum(1).cpu() + EXTRA_LENGTH
    if getattr(model, "max_len", None):
        limit = limit.clamp(max=model.max_len)  # the decoder reads <bos> + limit - 1 tokens at most
    return limit


def _use_cache(model, cache) -> dict | None:
    """A fresh cache when asked for (cache=True, or None and the model can reorder one), else None."""
    if cache is None:
        cache = hasattr(model, "reorder_cache")
    if cache and not hasattr(model, "reorder_cache"):
        raise UserError(f"{type(model).__name__} has no reorder_cache: decode it with cache=False")
    return {} if cache else None


def _step(model, ys, memory, src_keep, cache) -> torch.Tensor:
    """log P(next token | prefix ys (n, t)) in float32: (n, V)."""
    inp = ys if cache is None else ys[:, -1:]  # with a cache, only the newest token is new
    return F.log_softmax(model.decode(inp, memory, src_keep, cache)[:, -1].float(), dim=-1)


@torch.no_grad()
def greedy(model, src: torch.Tensor, bos: int, eos: int, max_len: int = None, cache: bool = None) -> list[list[int]]:
    """The most probable next token at each step, for a batch src (B, S). Each output stops at its <eos>
    (not included) or after max_len tokens (default: its source length + 50). cache: see the module doc
    (None: use one if the model has reorder_cache)."""
    memory, src_keep = model.encode(src)
    limit = _limits(model, src_keep, max_len)
    kv = _use_cache(model, cache)
    out = [None] * src.shape[0]
    alive = torch.arange(src.shape[0])  # sentences still decoding
    ys = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)  # (b, t + 1)
    for t in range(1, int(limit.max()) + 1):
        logp = _step(model, ys, memory, src_keep, kv)  # (b, V)
        token = logp.argmax(-1)  # (b,)
        ys = torch.cat([ys, token[:, None]], 1)
        done = (token == eos).cpu() | (limit[alive] <= t)
        for i in done.nonzero().flatten().tolist():
            seq = ys[i, 1:].tolist()
            out[int(alive[i])] = seq[:-1] if seq[-1] == eos else seq
        if done.all():
            break
        stay = (~done).nonzero().flatten()
        alive, ys = alive[stay], ys[stay.to(ys.device)]
        memory, src_keep = memory[stay.to(memory.device)], src_keep[stay.to(src_keep.device)]
        if kv is not None:
            model.reorder_cache(kv, stay.to(ys.device))
    return out


@torch.no_grad()
def beam_search(model, src: torch.Tensor, bos: int, eos: int, beam: int = 4, alpha: float = 0.6,
                max_len: int = None, cache: bool = None) -> list[list[int]]:
    """The best hypothesis under s(Y) = log P(Y|X) / lp(Y) found by a beam of `beam` for each sentence of src
    (B, S); all sentences are searched together, B * beam rows per model call.

    At each step every live hypothesis is extended by every token and the 2*beam best extensions are kept
    in order: an <eos> among the first `beam` of them ends a hypothesis (scored with its length penalty and
    kept), and the first `beam` others live on. A sentence is done when `beam` hypotheses have ended, or at
    max_len tokens (default: its source length + 50), when the live ones end there too. The search stops
    when every sentence is done. With beam=1 this is greedy decoding. cache: as for greedy.
    """
    if beam < 1:
        raise UserError(f"--beam must be at least 1, got {beam}")
    memory, src_keep = model.encode(src)
    B, K = src.shape[0], beam
    limit = _limits(model, src_keep, max_len)
    kv = _use_cache(model, cache)
    memory, src_keep = memory.repeat_interleave(K, 0), src_keep.repeat_interleave(K, 0)  # row b*K + k
    ys = torch.full((B * K, 1), bos, dtype=torch.long, device=src.device)  # (n K, t + 1)
    scores = torch.full((B, K), float("-inf"), device=src.device)  # log P of each live hypothesis
    scores[:, 0] = 0.0  # one empty hypothesis per sentence at the start, not K copies of it
    ended = [[] for _ in range(B)]  # (s(Y), tokens) of the hypotheses that have ended
    alive = torch.arange(B)  # sentences still searching
    for t in range(1, int(limit.max()) + 1):
        n = len(alive)
        logp = _step(model, ys, memory, src_keep, kv)  # (n K, V)
        V = logp.shape[-1]
        cand = (scores[:, :, None] + logp.view(n, K, V)).view(n, K * V)  # log P of every extension
        top, idx = cand.topk(min(2 * K, K * V), dim=1)  # (n, 2K), best first
        parent, token = idx // V, idx % V  # which hypothesis it extends, by which token
        real = top > float("-inf")
        is_eos = token == eos

        lp = length_penalty(t, alpha)
        first_k = torch.arange(top.shape[1], device=top.device) < K
        for i, j in ((is_eos & real & first_k).nonzero().tolist()):  # hypotheses ending with <eos> now
            row = i * K + int(parent[i, j])
            ended[int(alive[i])].append((float(top[i, j]) / lp, ys[row, 1:].tolist()))

        # the first K extensions that are not <eos> live on (stable sort keeps their rank order)
        live = real & ~is_eos
        pick = torch.argsort((~live).to(torch.int8), dim=1, stable=True)[:, :K]  # (n, K)
        scores = top.gather(1, pick).masked_fill(~live.gather(1, pick), float("-inf"))
        rows = (torch.arange(n, device=ys.device)[:, None] * K + parent.gather(1, pick)).flatten()
        ys = torch.cat([ys[rows], token.gather(1, pick).flatten()[:, None]], 1)  # (n K, t + 2)
        if kv is not None:
            model.reorder_cache(kv, rows)  # each surviving hypothesis takes its parent's keys and values

        at_limit = limit[alive] <= t
        done = at_limit | torch.tensor([len(ended[s]) >= K for s in alive.tolist()])
        done |= ~(scores > float("-inf")).any(1).cpu()  # nothing left alive
        for i in (at_limit & (scores > float("-inf")).any(1).cpu()).nonzero().flatten().tolist():
            for k in range(K):  # out of room: the live hypotheses end here, without <eos>
                if scores[i, k] > float("-inf"):
                    ended[int(alive[i])].append((float(scores[i, k]) / lp, ys[i * K + k, 1:].tolist()))
        if done.all():
            break
        stay = (~done).nonzero().flatten()
        stay_rows = (stay[:, None] * K + torch.arange(K)).flatten()
        alive, scores = alive[stay], scores[stay.to(scores.device)]
        ys = ys[stay_rows.to(ys.device)]
        memory, src_keep = memory[stay_rows.to(memory.device)], src_keep[stay_rows.to(src_keep.device)]
        if kv is not None:
            model.reorder_cache(kv, stay_rows.to(ys.device))
    return [max(e, key=lambda h: h[0])[1] if e else [] for e in ended]


def translate(model, sources, bos: int, eos: int, pad: int, beam: int = 4, alpha: float = 0.6,
              batch_size: int = 64, max_len: int = None, cache: bool = None) -> list[list[int]]:
    """Decode a list of source id sequences (lists or tensors), batch_size sentences at a time, shortest
    first; results come back in the input order. beam=1 decodes greedily. The model is put in eval mode
    for the call and its mode restored afterwards."""
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths share a batch
    out = [None] * len(sources)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            src = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(sources[i], dtype=torch.long) for i in chunk],
                                                  batch_first=True, padding_value=pad).to(device)  # (b, S)
            if beam == 1:
                hyps = greedy(model, src, bos, eos, max_len, cache)
            else:
                hyps = beam_search(model, src, bos, eos, beam, alpha, max_len, cache)
            for i, h in zip(chunk, hyps):
                out[i] = h
    finally:
        model.train(was_training)
    return out


def bleu(hypotheses: list[str], references: list[str], lowercase: bool = False) -> dict:
    """Corpus BLEU with sacreBLEU (one reference per sentence, its 13a tokenisation, cased unless lowercase):
    n-gram counts are summed over the corpus and combined once, never averaged over sentences.

    Returns {"score": BLEU in [0, 100], "signature": sacreBLEU's signature (the settings the number depends
    on), "precisions": the four n-gram precisions in %, "bp": the brevity penalty}.
    """
    import sacrebleu

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise UserError(f"BLEU needs one hypothesis per reference, got {len(hypotheses)} and {len(references)}")
    metric = sacrebleu.metrics.BLEU(tokenize="13a", lowercase=lowercase)
    result = metric.corpus_score(hypotheses, [references])
    return {"score": result.score, "signature": str(metric.get_signature()),
            "precisions": list(result.precisions), "bp": result.bp}
