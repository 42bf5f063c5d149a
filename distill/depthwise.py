"""Depthwise convolutions on small CPU maps: the same forward, a weight gradient by shifted products.

Why: a student at the bench's 64 px ends with 5x5 depthwise convolutions on 4x4 and 2x2 maps
(tf_efficientnet_lite0's last stages). On an AVX2 CPU, oneDNN's weight gradient for these takes
30-55 ms a layer at batch 64, 10-50x the forward, while the same sum written as one product per
kernel tap takes 3-9 ms; a whole Lite0 step goes from about 720 to 470 ms on one thread
(``benchmarks/bench_student_step.py``). Where the output map has more positions than the kernel
has taps, oneDNN is faster and is left alone.

``small_map_depthwise()`` routes such calls of ``F.conv2d`` (``nn.Conv2d`` and timm's
``Conv2dSame`` alike, with no change to any module or state_dict) while a forward runs; the
backward of a routed call needs no mode.
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
    """dL/dw[c, i, j] = sum over batch and output positions of grad * the input shifted by (i, j)."""
    ho, wo = grad.shape[-2:]
    xp = F.pad(x, (p, p, p, p))
    taps = [(xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] * grad).sum((0, 2, 3))
            for i in range(k) for j in range(k)]
    return torch.stack(taps, 1)


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


_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS = dict(bias=None, stride=1, padding=0, dilation=1, groups=1)


class small_map_depthwise(TorchFunctionMode):
    """While active, ``F.conv2d`` calls that ``routes`` accepts use ``_SmallMapDepthwise``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            call = {**_DEFAULTS, **dict(zip(_ARGS, args)), **kwargs}
            x, weight = call["input"], call["weight"]
            if routes(x, weight, call["stride"], call["padding"], call["dilation"], call["groups"]):
                return _SmallMapDepthwise.apply(x, weight, call["bias"], _pair(call["stride"]), _pair(call["padding"]))
        return func(*args, **kwargs)
