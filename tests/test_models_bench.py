"""The training benchmark (minstn.bench.train) and its PyTorch twin (minstn.bench.torch_models),
on tiny settings: it runs, reports a positive rate, rejects bad arguments, and the twin has the
same architecture (same parameter count, same output shapes) as minstn.models."""
from __future__ import annotations

import numpy as np
import pytest

from minstn.bench.train import main, measure_images_per_sec
from minstn.models import build_model


def test_measure_images_per_sec_runs():
    rate = measure_images_per_sec("ffn-stn", 4, batch_size=2, steps=1, warmup=0)
    assert np.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="need steps >= 1"):
        measure_images_per_sec("ffn-stn", 4, steps=0)


def test_main_prints_a_table(capsys):
    assert main(["--models", "lstm-stn", "--downsample", "4", "--batch-size", "2", "--steps", "1",
                 "--warmup", "0", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "| lstm-stn | 4 |" in out and "training images/s" in out
    with pytest.raises(SystemExit):
        main(["--downsample", "5", "--no-torch"])
    assert "--downsample values must be in 1..4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--chunk", "0", "--workers", "2", "--no-torch"])
    assert "--workers above 1 needs --chunk above 0" in capsys.readouterr().err


def test_main_chunks_on_workers_and_restores_blas_threads(capsys):
    from minstn.training.speed import host

    before = host.blas_threads()
    assert main(["--models", "cnn", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--no-torch",
                 "--chunk", "2", "--workers", "2", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "chunks of 2 on 2 worker processes" in out and "threads img/s" in out and "whole batch img/s" in out
    assert "| cnn | 1 |" in out
    assert host.blas_threads() == before
    assert main(["--models", "cnn", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--no-torch", "--no-whole",
                 "--chunk", "2", "--workers", "2", "--parallel", "thread", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "chunks of 2 on 2 worker thread(s)" in out and "median of 2 interleaved rounds" in out
    assert "threads img/s" not in out and "whole batch" not in out
    with pytest.raises(SystemExit):
        main(["--rounds", "0", "--no-torch"])
    assert "--rounds must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("name, d, options", [("cnn", 1, {}), ("ffn-stn", 3, {}), ("lstm-stn", 2, {}),
                                              ("lstm-stn", 2, {"cell": "gru"}), ("lstm-stn", 2, {"cell": "rnn"}),
                                              ("cnn", 1, {"digits": 3, "cls_filters": 16}),
                                              ("ffn-stn", 2, {"digits": 3, "cls_filters": 96})])
def test_torch_twin_has_the_same_architecture(name, d, options):
    torch = pytest.importorskip("torch")
    from minstn.bench.torch_models import build_torch_model

    ours = build_model(name, d, **options)
    twin = build_torch_model(name, d, **ours.options)
    n_twin = sum(p.numel() for p in twin.parameters())
    cell = ours.options.get("cell")
    extra = {"lstm": 4 * 256, "rnn": 256}.get(cell, 0)   # torch's LSTM and RNN cells keep two bias vectors, minstn one
    assert n_twin == ours.num_params() + extra
    x = np.random.default_rng(0).random((2, 1, 100, 100), dtype=np.float32)
    twin.eval()
    with torch.no_grad():
        assert tuple(twin(torch.from_numpy(x)).shape) == (2, ours.digits, 10)
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        build_torch_model("rnn", 2)
    with pytest.raises(ValueError, match="no tied LSTM-STN"):
        build_torch_model("lstm-stn", 2, tied=True)


def _copy_into_twin(model, twin, torch):
    """Load minstn parameters into the PyTorch twin (linear weights transposed; the LSTM's and the
    RNN's one bias goes to bias_ih, bias_hh = 0; the GRU has both). Returns {minstn name: torch parameter}."""
    convs = [m for m in twin.modules() if isinstance(m, torch.nn.Conv2d)]
    names = [k[:-2] for k in model.params if k.endswith(".w") and "conv" in k]
    pairs = {}
    for name, conv in zip(names, convs):          # modules come in definition order: loc, then cls
        pairs[name + ".w"], pairs[name + ".b"] = conv.weight, conv.bias
    fcs = [m for m in twin.cls.modules() if isinstance(m, torch.nn.Linear)]
    pairs["cls.fc.w"], pairs["cls.fc.b"], pairs["cls.head.w"], pairs["cls.head.b"] = (
        fcs[0].weight, fcs[0].bias, fcs[1].weight, fcs[1].bias)
    if hasattr(twin, "reg"):
        pairs["reg.w"], pairs["reg.b"] = twin.reg.weight, twin.reg.bias
    if getattr(twin, "step_b", None) is not None:
        pairs["reg.step_b"] = twin.step_b
    if hasattr(twin, "rec"):
        cell, rec = twin.cell, twin.rec
        pairs[f"{cell}.Wx"], pairs[f"{cell}.Wh"] = rec.weight_ih, rec.weight_hh
        if cell == "gru":
            pairs["gru.bx"], pairs["gru.bh"] = rec.bias_ih, rec.bias_hh
        else:
            pairs[f"{cell}.b"] = rec.bias_ih
            with torch.no_grad():
                rec.bias_hh.zero_()
    assert set(pairs) == set(model.params)
    with torch.no_grad():
        for k, p in pairs.items():
            v = torch.from_numpy(model.params[k])
            p.copy_(v.T if v.ndim == 2 and k != "reg.step_b" else v)   # linear weights: minstn (D, M), torch (M, D)
    return pairs


@pytest.mark.parametrize("name, d, options", [("cnn", 1, {"head_init": "he"}),
                                              ("ffn-stn", 3, {"init_scale": 0.8, "regressor_std": 0.01, "head_init": "he"}),
                                              ("lstm-stn", 2, {"head_init": "he"}), ("lstm-stn", 4, {"feedback": "none", "head_init": "he"}),
                                              ("lstm-stn", 4, {"step_spread": 0.4, "head_init": "he"}), ("lstm-stn", 2, {}),
                                              ("lstm-stn", 2, {"cell": "gru", "head_init": "he"}),
                                              ("lstm-stn", 3, {"cell": "rnn", "head_init": "he"}),
                                              ("lstm-stn", 2, {"digits": 3, "cls_filters": 8, "head_init": "he"}),
                                              # not the FFN's identity start: its samples sit on pixel centres,
                                              # where the sampler's gradient is one-sided and the two may differ
                                              ("ffn-stn", 2, {"digits": 3, "cls_filters": 8, "init_scale": 0.9,
                                                              "regressor_std": 0.01, "head_init": "he"})])
def test_matches_the_torch_twin_in_float64(name, d, options):
    """An independent check of each whole model: with the same weights, minstn and PyTorch
    (autograd) agree on the logits, the loss and every parameter gradient (float64, no dropout)."""
    torch = pytest.importorskip("torch")
    from minstn.bench.torch_models import build_torch_model

    model = build_model(name, d, dtype="float64", seed=1, dropout=0.0, **options)
    twin = build_torch_model(name, d, **model.options).double()
    pairs = _copy_into_twin(model, twin, torch)
    rng = np.random.default_rng(2)
    x = rng.random((3, 1, 100, 100))
    labels = rng.integers(0, 10, size=(3, model.digits))
    loss, logits = model.loss_and_grads(x, labels)
    out = twin(torch.from_numpy(x))
    t_loss = torch.nn.functional.cross_entropy(out.reshape(-1, 10), torch.from_numpy(labels).reshape(-1))
    t_loss.backward()
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert abs(loss - t_loss.item()) < 1e-10
    for k, p in pairs.items():
        g = p.grad.numpy()
        np.testing.assert_allclose(model.grads[k], g.T if g.ndim == 2 and k != "reg.step_b" else g, rtol=1e-7, atol=1e-12, err_msg=k)


def test_profile_lists_the_ops(capsys):
    assert main(["--profile", "--models", "ffn-stn", "--downsample", "4", "--batch-size", "4", "--steps", "1",
                 "--chunk", "2"]) == 0
    out = capsys.readouterr().out
    assert "ffn-stn d=4" in out and "| fast.conv2d_relu_backward |" in out and "| fast.bilinear_sample_forward |" in out
