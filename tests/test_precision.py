"""Precision is what --precision says, on every device: the recurrent kernels under autocast (05's LSTM, also
06's recurrent baselines), whose CUDA autocast rule would otherwise run a bf16 run's LSTM in unscaled fp16."""

import importlib

import pytest
import torch

pytestmark = pytest.mark.device  # `check` runs these on the device it checks

lstm = importlib.import_module("milestones.05_lstm.model")


@pytest.mark.parametrize("device, enabled, dtype, fp32", [
    ("cuda", True, torch.bfloat16, True),   # cuDNN would run it in fp16 with no loss scaling: fp32 (TF32) instead
    ("cuda", True, torch.float16, False),   # fp16 runs scale their loss: cuDNN's fp16 kernel is right there
    ("cuda", False, torch.bfloat16, False),  # fp32 runs: nothing to leave
    ("cpu", True, torch.bfloat16, False),   # a CPU runs the LSTM in bf16, as asked
])
def test_the_lstm_leaves_autocast_only_where_autocast_would_pick_unscaled_fp16(monkeypatch, device, enabled,
                                                                                dtype, fp32):
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda d=None: enabled and d == device)
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda d: dtype)
    assert lstm.fp32_under_autocast(device) is fp32


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_a_recurrent_layer_that_leaves_autocast_computes_in_fp32(monkeypatch, kind):
    net = lstm.Recurrent(kind, 8, 16, num_layers=2)
    x = torch.randn(3, 5, 8)
    with torch.autocast("cpu", torch.bfloat16):
        assert net(x)[0].dtype == torch.bfloat16  # the rule not triggered: autocast's own choice
        monkeypatch.setattr(lstm, "fp32_under_autocast", lambda device_type: True)
        y, state = net(x.bfloat16(), net.init_state(3))
    assert y.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(y, net(x.bfloat16().float())[0])  # the fp32 computation, exactly
