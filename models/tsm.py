"""MobileNetV2 with the Temporal Shift Module, in an offline (clip) and an online (frame) form.

The parameter names follow the reference online TSM demo (``features.N.conv.M.*``,
``classifier.*``), so its checkpoints load without renaming. One set of weights serves:

* the offline form, ``TSMNet(x)`` with ``x`` of shape N x T x C x H x W, used for training; the
  shift is ``causal`` (channels ``[:c/8]`` of frame t come from frame t-1, zeros at t=0),
  ``bidirectional`` (classic TSM: ``[:c/8]`` from t+1, ``[c/8:c/4]`` from t-1) or ``none``
  (TSN-style ablation);
* the online form, ``OnlineTSM(net)(frame, *states)`` -> ``(logits, *new_states)``, one frame per
  call, one state tensor per shifted block. Run frame by frame from zero states it equals the
  offline causal form.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

SHIFT_MODES = ("causal", "bidirectional", "none")
FOLD_DIV = 8
# (expand ratio t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table.
MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
# Blocks (0-based, of the 17) that shift: the 10 with a residual connection at width 1.0. Fixed by
# index as in the reference, so that other widths shift the same blocks.
SHIFT_BLOCKS = (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)


def make_divisible(x: float, divisible_by: int = 8) -> int:
    """Round a channel count up to a multiple of ``divisible_by`` (the reference rounding)."""
    return int(math.ceil(x / divisible_by) * divisible_by)


def _conv_bn(inp: int, oup: int, kernel: int, stride: int, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(oup)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    """MobileNetV2 block; with ``shift`` the residual branch sees 1/8 of its channels from another frame."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, shift: bool = False) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res = stride == 1 and inp == oup
        self.shift = shift and self.use_res
        self.fold = inp // FOLD_DIV
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _conv_bn(inp, hidden, 1, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, oup, 1, 1, relu=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, n_segment: int = 1, mode: str = "none") -> torch.Tensor:
        if not self.use_res:
            return self.conv(x)
        branch = temporal_shift(x, n_segment, self.fold, mode) if self.shift else x
        return x + self.conv(branch)

    def forward_online(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: the first ``fold`` channels come from ``state`` (the previous frame's)."""
        branch = torch.cat((state, x[:, self.fold:]), dim=1)
        return x + self.conv(branch), x[:, :self.fold]


def temporal_shift(x: torch.Tensor, n_segment: int, fold: int, mode: str) -> torch.Tensor:
    """Shift channels of an (N*T) x C x H x W tensor along T; see the module docstring."""
    if mode == "none" or fold == 0:
        return x
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    zero = v.new_zeros(v.shape[0], 1, fold, h, w)
    past = torch.cat((zero, v[:, :-1, :fold]), dim=1)
    if mode == "causal":
        out = torch.cat((past, v[:, :, fold:]), dim=2)
    elif mode == "bidirectional":
        future = torch.cat((v[:, 1:, :fold], zero), dim=1)
        past2 = torch.cat((zero, v[:, :-1, fold:2 * fold]), dim=1)
        out = torch.cat((future, past2, v[:, :, 2 * fold:]), dim=2)
    else:
        raise ValueError(f"shift mode {mode!r} is not one of {', '.join(SHIFT_MODES)}")
    return out.reshape(nt, c, h, w)


class TSMNet(nn.Module):
    """MobileNetV2-TSM. ``forward(x)`` takes N x T x 3 x H x W and returns per-frame logits N x T x K."""

    def __init__(self, num_classes: int, width: float = 1.0, shift: str = "causal", dropout: float = 0.2) -> None:
        super().__init__()
        if shift not in SHIFT_MODES:
            raise ValueError(f"shift mode {shift!r} is not one of {', '.join(SHIFT_MODES)}")
        self.num_classes = num_classes
        self.width = width
        self.shift_mode = shift
        inp = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * width) if width > 1.0 else 1280
        features: list[nn.Module] = [nn.Sequential(*_conv_bn(3, inp, 3, 2))]
        for t, c, n, s in MBV2_SETTING:
            oup = make_divisible(c * width) if t > 1 else c
            for i in range(n):
                stride = s if i == 0 else 1
                shift_here = len(features) - 1 in SHIFT_BLOCKS
                features.append(InvertedResidual(inp, oup, stride, t, shift=shift_here))
                inp = oup
        features.append(nn.Sequential(*_conv_bn(inp, self.last_channel, 1, 1)))
        self.features = nn.ModuleList(features)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.last_channel, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # No zero-initialised residual BN scales: they switch the shifted branch off at the start and,
        # measured here, keep a from-scratch TSM from ever finding the temporal signal.

    @property
    def shift_blocks(self) -> list[InvertedResidual]:
        """The blocks that carry a temporal state, in network order."""
        return [m for m in self.features if isinstance(m, InvertedResidual) and m.shift]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = x.reshape(n * t, *x.shape[2:])
        for m in self.features:
            y = m(y, t, self.shift_mode) if isinstance(m, InvertedResidual) else m(y)
        y = self.classifier(self.dropout(y.mean((2, 3))))
        return y.view(n, t, -1)

    def state_shapes(self, size: Sequence[int]) -> list[tuple[int, int, int, int]]:
        """Shapes (1, C, H, W) of the online state tensors for an input of ``size`` = (H, W)."""
        shapes: list[tuple[int, int, int, int]] = []
        if self.shift_mode == "none":
            return shapes
        with torch.no_grad():
            y = torch.zeros(1, 3, int(size[0]), int(size[1]))
            for m in self.features:
                if isinstance(m, InvertedResidual) and m.shift:
                    shapes.append((1, m.fold, y.shape[2], y.shape[3]))
                    y = torch.zeros(1, m.conv[-1].num_features, y.shape[2], y.shape[3])
                elif isinstance(m, InvertedResidual):
                    y = m.conv(y)
                else:
                    y = m(y)
        return shapes


class OnlineTSM(nn.Module):
    """The online form: ``forward(frame, *states) -> (logits, *new_states)``; states start at zero."""

    def __init__(self, net: TSMNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frame: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = frame
        new_states = []
        it = iter(states)
        stateful = self.net.shift_mode != "none"
        for m in self.net.features:
            if stateful and isinstance(m, InvertedResidual) and m.shift:
                y, s = m.forward_online(y, next(it))
                new_states.append(s)
            else:
                y = m(y)
        logits = self.net.classifier(y.mean((2, 3)))
        return (logits, *new_states)
