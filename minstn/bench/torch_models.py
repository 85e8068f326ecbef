"""The three models written in PyTorch, for the training benchmark only (`python -m minstn.bench train`).

Not imported by the package at run time: only minstn.bench.train imports it, and only when
torch is importable. The layers, shapes, initialisation rules and the LSTM-STN's glimpse
batching are the same as in minstn.models, so the two can be timed side by side:

    CNN       classifier on the 100x100 canvas, one FC 400 -> 40 read as four heads
    FFN-STN   loc net (4 x conv 20 + ReLU + maxpool) -> FC 720 -> 6 -> affine_grid -> grid_sample
              (align_corners=False, zero padding) -> avg_pool d -> classifier with four heads
    LSTM-STN  loc net -> LSTMCell (or GRUCell, RNNCell)(720 [+ 6 fed-back theta], 256) x P steps -> FC 256 -> 6 per step;
              the 4 glimpses of a canvas go through the classifier as one batch of N*4

Shape legend: N canvases, P digits, T = P steps, G = d * floor(100 / d) grid side, S = G / d glimpse side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CANVAS = 100


def _classifier(side: int, heads: int, dropout: float, filters: int = 32) -> nn.Sequential:
    s2, k = side // 2 // 2, filters
    return nn.Sequential(
        nn.Conv2d(1, k, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(k, k, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(k, k, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
        nn.Flatten(), nn.Linear(k * s2 * s2, 400), nn.ReLU(), nn.Linear(400, 10 * heads),
    )


def _localisation() -> nn.Sequential:
    layers, c = [], 1
    for _ in range(4):
        layers += [nn.Conv2d(c, 20, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = 20
    return nn.Sequential(*layers, nn.Flatten())  # (N, 720)


def _he_init(module: nn.Module) -> None:
    """He-normal conv and linear weights, zero biases (as minstn.models)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _regressor(d_in: int, init_scale: float, regressor_std: float) -> nn.Linear:
    reg = nn.Linear(d_in, 6)
    with torch.no_grad():
        reg.weight.normal_(0.0, regressor_std) if regressor_std > 0 else reg.weight.zero_()
        reg.bias.copy_(torch.tensor([init_scale, 0, 0, 0, init_scale, 0], dtype=torch.float32))
    return reg


class TorchCNN(nn.Module):
    def __init__(self, downsample: int = 1, dropout: float = 0.5, cls_filters: int = 32, digits: int = 4):
        super().__init__()
        self.P = digits
        self.cls = _classifier(CANVAS, digits, dropout, cls_filters)
        _he_init(self)

    def forward(self, x):                        # x (N, 1, 100, 100)
        return self.cls(x).view(-1, self.P, 10)  # (N, P, 10)


class TorchFFNSTN(nn.Module):
    def __init__(self, downsample: int = 2, dropout: float = 0.5, init_scale: float = 1.0, regressor_std: float = 0.0,
                 cls_filters: int = 32, digits: int = 4):
        super().__init__()
        self.d, self.P = downsample, digits
        self.G = downsample * (CANVAS // downsample)
        self.loc = _localisation()
        self.cls = _classifier(CANVAS // downsample, digits, dropout, cls_filters)
        _he_init(self)
        self.reg = _regressor(720, init_scale, regressor_std)

    def forward(self, x):                                                     # x (N, 1, 100, 100)
        N = x.shape[0]
        theta = self.reg(self.loc(x)).view(N, 2, 3)                           # (N, 2, 3)
        grid = F.affine_grid(theta, [N, 1, self.G, self.G], align_corners=False)  # (N, G, G, 2)
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        g = F.avg_pool2d(v, self.d) if self.d > 1 else v                      # (N, 1, S, S)
        return self.cls(g).view(N, self.P, 10)


class TorchLSTMSTN(nn.Module):
    def __init__(self, downsample: int = 2, dropout: float = 0.5, init_scale: float = 0.5,
                 regressor_std: float = 1e-3, feedback: str = "theta", hidden_size: int = 256,
                 step_spread: float = 0.0, cell: str = "lstm", cls_filters: int = 32, digits: int = 4):
        super().__init__()
        self.d, self.T, self.H, self.cell = downsample, digits, hidden_size, cell
        self.G = downsample * (CANVAS // downsample)
        self.feedback = feedback == "theta"
        self.loc = _localisation()
        self.cls = _classifier(CANVAS // downsample, 1, dropout, cls_filters)
        _he_init(self)
        cells = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}
        if cell not in cells:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(cells)}")
        self.rec = cells[cell](720 + (6 if self.feedback else 0), hidden_size)
        with torch.no_grad():                    # minstn starts every recurrent bias at zero
            self.rec.bias_ih.zero_()
            self.rec.bias_hh.zero_()
        self.reg = _regressor(hidden_size, init_scale, regressor_std)
        self.register_buffer("theta0", torch.tensor([init_scale, 0, 0, 0, init_scale, 0], dtype=torch.float32))
        self.step_b = None
        if step_spread > 0:                      # a learned bias per step (minstn's reg.step_b)
            step_b = torch.zeros(self.T, 6)
            step_b[:, 2] = step_spread * (torch.arange(self.T, dtype=torch.float32) - (self.T - 1) / 2)
            self.step_b = nn.Parameter(step_b)

    def forward(self, x):                                                     # x (N, 1, 100, 100)
        N, T, G = x.shape[0], self.T, self.G
        f = self.loc(x)                                                       # (N, 720)
        h = f.new_zeros(N, self.H)
        c = f.new_zeros(N, self.H)
        theta = self.theta0.expand(N, 6)
        thetas = []
        for t in range(T):
            inp = torch.cat([f, theta], dim=1) if self.feedback else f
            if self.cell == "lstm":
                h, c = self.rec(inp, (h, c))
            else:
                h = self.rec(inp, h)
            theta = self.reg(h)                                               # (N, 6)
            if self.step_b is not None:
                theta = theta + self.step_b[t]
            thetas.append(theta)
        th = torch.stack(thetas, dim=1).view(N * T, 2, 3)                     # (N*T, 2, 3)
        grid = F.affine_grid(th, [N * T, 1, G, G], align_corners=False).view(N, T * G, G, 2)
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, 1, T*G, G)
        v = v.view(N * T, 1, G, G)
        g = F.avg_pool2d(v, self.d) if self.d > 1 else v                      # (N*T, 1, S, S)
        return self.cls(g).view(N, T, 10)


def build_torch_model(name: str, downsample: int, **options) -> nn.Module:
    """The PyTorch twin of minstn.models.build_model(name, downsample, **options) (float32, CPU).
    The option sampler_impl has no PyTorch meaning and is ignored; head_init 'zero' zeroes the
    classifier's last weights, as in minstn; tied must be False (no tied twin)."""
    options = {k: v for k, v in options.items() if k != "sampler_impl"}
    head_init = options.pop("head_init", "he")
    if options.pop("tied", False):
        raise ValueError("the PyTorch twin has no tied LSTM-STN; time the untied model (tied=False)")
    classes = {"cnn": TorchCNN, "ffn-stn": TorchFFNSTN, "lstm-stn": TorchLSTMSTN}
    if name not in classes:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(classes)}")
    model = classes[name](downsample, **options)
    if head_init == "zero":                      # the classifier's last layer starts at 0
        with torch.no_grad():
            model.cls[-1].weight.zero_()
    return model
