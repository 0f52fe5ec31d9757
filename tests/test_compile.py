"""torch.compile over each milestone's main model (the ones `bench` times): one whole graph, no graph break, no
recompile after the first step. Checked with dynamo's own counters and its `eager` backend, which traces exactly as
a real backend would but compiles nothing, so the test takes seconds on a CPU. nn.LSTM is the known exception: its
fused kernel is opaque to dynamo (05's model breaks the graph there), so its case is checked to break, not to pass.
Shapes that change at every step (05 adding's lengths, 06's token batches) must not recompile at every step either."""

import importlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from milestones import bench

pytestmark = pytest.mark.device  # `check` runs these on the device it checks

adding = importlib.import_module("milestones.05_lstm.adding")
train05 = importlib.import_module("milestones.05_lstm.train")
data06 = importlib.import_module("milestones.06_transformer.data")
seq2seq = importlib.import_module("milestones.06_transformer.seq2seq")

CASES = {f"{c.milestone}: {c.model}": c for c in bench.build_cases(bench.resolve([]))}
BREAKS = {"05_lstm"}  # nn.LSTM: dynamo graph-breaks around the cuDNN/fused LSTM op


def compiled(net: torch.nn.Module) -> torch.nn.Module:
    if isinstance(net, torch.nn.ModuleDict):  # a GAN's two nets, compiled one by one
        return torch.nn.ModuleDict({k: compiled(v) for k, v in net.items()})
    return torch.compile(net, backend="eager")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_main_model_compiles_whole_and_never_recompiles(name):
    case = CASES[name]
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = compiled(case.net.train())
    graphs = []
    for _ in range(3):  # same shapes, new values each step, as training sees them
        loss = case.loss(net, case.batch(2))
        loss.backward()
        graphs.append(counters["stats"]["unique_graphs"])
    if case.milestone in BREAKS:
        assert counters["graph_break"], "nn.LSTM was expected to break the graph; if it no longer does, say so"
        return
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert graphs[0] >= 1 and graphs[0] == graphs[-1], f"recompiled: graphs after each step {graphs}"
    assert torch.isfinite(loss)


def graph_count() -> int:
    return counters["stats"]["unique_graphs"]


def test_05_adding_compiles_once_whatever_the_length(monkeypatch, tmp_path):
    """The real adding loop (train.main, --compile) for 8 steps at T = 40: each batch has its own length in
    [40, 44]. The scratch 1997 cell compiled whole unrolled one graph per length. Now each compiled frame (the scratch
    cell's time step, nn.LSTM's readout) may compile once more at the first new length, with the length (or the
    stride it sets) dynamic, and never again."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="eager"))
    steps = {}  # model -> [(length, graphs so far) after each training step]
    batch = adding.adding_batch

    class Counting(adding.Session):
        def step(self, n, spent=None):
            super().step(n, spent)
            steps.setdefault(self.tag["model"], []).append((self.length, graph_count()))

    def recorded(batch_size, T, gen, *args, **kwargs):
        x, y = batch(batch_size, T, gen, *args, **kwargs)
        Counting.length = x.shape[1]  # the latest batch's (the training batch, at a step)
        return x, y

    monkeypatch.setattr(adding, "Session", Counting)
    monkeypatch.setattr(adding, "adding_batch", recorded)
    torch._dynamo.reset()
    counters.clear()
    train05.main(["--experiment", "adding", "--preset", "smoke", "--lengths", "40", "--models", "lstm1997,lstm,rnn",
                  "--steps", "8", "--eval-every", "0", "--solved-error", "0", "--compile", "default",
                  "--out-dir", str(tmp_path), "--threads", "1"])
    assert set(steps) == {"lstm1997", "lstm", "rnn"}
    for model, rows in steps.items():
        lengths, graphs = zip(*rows)
        assert len(rows) == 8 and len(set(lengths)) >= 4, rows  # the lengths do vary
        grew = sum(b > a for a, b in zip(graphs, graphs[1:]))  # steps after the first that compiled something
        assert grew <= 1, f"{model} recompiled: (length, graphs) per step {rows}"


def test_06_token_batches_compile_once(data_root):
    """Eight real Multi30k token-count batches (all of different (B, S, T), as Pairs yields them to the training
    loop) through the compiled Transformer: one compile serves them all."""
    d = data06.load_multi30k(data_root, vocab_size=2000)
    rt = SimpleNamespace(device=torch.device("cpu"), rank=0, world_size=1)
    train = seq2seq.Pairs(d["train"], 2000, rt, shuffle=True, seed=0)
    torch.manual_seed(0)
    model = seq2seq.Transformer(2000, d_model=32, n_layers=1, h=2, d_ff=64, dropout=0.1)
    net = torch.compile(model, backend="eager")
    torch._dynamo.reset()
    counters.clear()
    shapes, graphs = [], []
    for (src, tgt_in, tgt_out, _), _ in zip(train.batches(0), range(8)):
        logits = net(src, tgt_in)  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=data06.PAD).backward()
        shapes.append((*src.shape, tgt_in.shape[1]))
        graphs.append(graph_count())
    assert len(set(shapes)) == 8, shapes  # a new (B, S, T) at every step
    assert graphs == [1] * 8, f"recompiled: graphs after each step {graphs} for shapes {shapes}"
