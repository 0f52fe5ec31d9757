"""torch.compile over each milestone's main model (the ones `bench` times): one whole graph, no graph break, no
recompile after the first step. Checked with dynamo's own counters and its `eager` backend, which traces exactly as
a real backend would but compiles nothing, so the test takes seconds on a CPU. nn.LSTM is the known exception: its
fused kernel is opaque to dynamo (05's model breaks the graph there), so its case is checked to break, not to pass."""

import pytest
import torch
from torch._dynamo.utils import counters

from milestones import bench

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
