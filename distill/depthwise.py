"""Two CPU training routes for timm's depthwise convnets: small-map depthwise weight gradients, and pads.

Why the first: a student at the bench's 64 px ends with 5x5 depthwise convolutions on 4x4 and 2x2 maps
(tf_efficientnet_lite0's last stages). On an AVX2 CPU, oneDNN's weight gradient for these takes
30-55 ms a layer at batch 64, 10-50x the forward; on AVX512, 6-13 ms. The same sum written as one product
per kernel tap, over only the positions the tap sees inside the map, takes 0.3-6 ms
(``benchmarks/bench_student_step.py``). Where the output map has more positions than the kernel has
taps, oneDNN is faster and is left alone.

Why the second: timm's "same" padding (``Conv2dSame``) pads before every stride-2 convolution, and
ATen's pad of a channels_last batch fills the whole padded tensor before copying the map in: 3x
slower than filling the border alone, on Lite0's largest map.

``small_map_depthwise()`` routes such calls of ``F.conv2d`` and ``F.pad`` (``nn.Conv2d`` and
``Conv2dSame`` alike, with no change to any module or state_dict) while a forward runs; the backward of
a routed call needs no mode.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _pair(value) -> Optional[int]:
    """One int for a square setting, else None (strings like ``"same"``, unequal pairs)."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return value[0]
    return None


class _SmallMapDepthwise(torch.autograd.Function):
    """``F.conv2d`` forward; input gradient from ATen, weight gradient as k*k shifted products."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], x.shape[1],
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad, weight.shape[-1], s, p).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """dL/dw[c, i, j] = sum over batch and output positions of grad * the input shifted by (i, j).

    Each tap multiplies only the output positions whose shifted input lies inside the map, so nothing is
    padded: on a 2x2 map most of a 5x5 kernel's taps fall on padding and cost nothing, and on 4x4 half the
    products are skipped (2-7x faster than padding first, on an AVX512 CPU)."""
    _, c, h, w = x.shape
    ho, wo = grad.shape[-2:]
    out = x.new_zeros(c, k, k)
    for i in range(k):
        y0, y1 = _inside(i, s, p, h, ho)
        for j in range(k):
            x0, x1 = _inside(j, s, p, w, wo)
            if y0 < y1 and x0 < x1:
                shifted = x[:, :, y0 * s + i - p:(y1 - 1) * s + i - p + 1:s, x0 * s + j - p:(x1 - 1) * s + j - p + 1:s]
                out[:, i, j] = (shifted * grad[:, :, y0:y1, x0:x1]).sum((0, 2, 3))
    return out


def _inside(tap: int, s: int, p: int, size: int, out: int) -> tuple[int, int]:
    """The output positions [lo, hi) whose input under this tap, ``o * s + tap - p``, lies in [0, size)."""
    return max(0, -((tap - p) // s)), min(out, (size - 1 - tap + p) // s + 1)


def routes(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Whether a ``conv2d`` call is a CPU depthwise convolution, training, on a map no larger than its kernel."""
    s, p, k = _pair(stride), _pair(padding), weight.shape[-1]
    if s is None or p is None or _pair(dilation) != 1 or weight.shape[-2] != k:
        return False
    if x.device.type != "cpu" or x.dim() != 4 or not torch.is_grad_enabled():
        return False
    if not (groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1):
        return False
    if not (x.requires_grad or weight.requires_grad):
        return False
    h_out, w_out = ((size + 2 * p - k) // s + 1 for size in x.shape[-2:])
    return h_out * w_out <= k * k


class _ChannelsLastPad(torch.autograd.Function):
    """``F.pad`` with zeros (or a constant) around a channels_last batch: the map is copied once into an
    uninitialised channels_last tensor and only the border is filled, where ATen fills the whole padded
    tensor first (3x slower on Lite0's 32x32 stride-2 input; timm's "same" padding pads before every
    stride-2 convolution)."""

    @staticmethod
    def forward(ctx, x, left: int, right: int, top: int, bottom: int, value: float):
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        out[:, :, top:top + h, left:left + w] = x
        for border in (out[:, :, :top], out[:, :, top + h:], out[:, :, top:top + h, :left],
                       out[:, :, top:top + h, left + w:]):
            border.fill_(value)
        ctx.box = (top, h, left, w)
        return out

    @staticmethod
    def backward(ctx, grad):
        top, h, left, w = ctx.box
        return grad[:, :, top:top + h, left:left + w], None, None, None, None, None


def pads_channels_last(x: torch.Tensor, pad, mode: str) -> bool:
    """Whether an ``F.pad`` call is a constant pad of the two spatial sides of a CPU channels_last batch."""
    return (mode == "constant" and x.device.type == "cpu" and x.dim() == 4 and len(pad) == 4
            and all(isinstance(v, int) and v >= 0 for v in pad) and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS = dict(bias=None, stride=1, padding=0, dilation=1, groups=1)
_PAD_ARGS, _PAD_DEFAULTS = ("input", "pad", "mode", "value"), dict(mode="constant", value=None)


class small_map_depthwise(TorchFunctionMode):
    """While active, ``F.conv2d`` calls that ``routes`` accepts use ``_SmallMapDepthwise``, and ``F.pad``
    calls that ``pads_channels_last`` accepts use ``_ChannelsLastPad``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            call = {**_DEFAULTS, **dict(zip(_ARGS, args)), **kwargs}
            x, weight = call["input"], call["weight"]
            if routes(x, weight, call["stride"], call["padding"], call["dilation"], call["groups"]):
                return _SmallMapDepthwise.apply(x, weight, call["bias"], _pair(call["stride"]), _pair(call["padding"]))
        elif func is F.pad:
            call = {**_PAD_DEFAULTS, **dict(zip(_PAD_ARGS, args)), **kwargs}
            if pads_channels_last(call["input"], call["pad"], call["mode"]):
                return _ChannelsLastPad.apply(call["input"], *call["pad"], call["value"] or 0.0)
        return func(*args, **kwargs)
