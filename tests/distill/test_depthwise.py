"""The CPU training routes (small-map depthwise gradient, channels_last pad): same outputs and gradients as
ATen's, taken only where they should be."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.depthwise import pads_channels_last, routes, small_map_depthwise
from distill.models import CLONED_IN_PLACE, Student


def _grads(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor, mode) -> tuple:
    x = x.clone().requires_grad_()
    conv.zero_grad()
    with mode():
        y = conv(x)
    y.backward(grad)
    bias = conv.bias.grad.clone() if conv.bias is not None else None
    return y.detach(), x.grad, conv.weight.grad.clone(), bias


@pytest.mark.parametrize("channels,size,k,stride,bias", [
    (8, 4, 5, 1, False),    # Lite0's stage 5: 5x5 on 4x4
    (8, 4, 5, 2, False),    # stride 2 to a 2x2 map
    (8, 2, 5, 1, False),    # Lite0's stage 6: 5x5 on 2x2, most taps on padding
    (6, 2, 3, 1, True),     # 3x3 on 2x2, with a bias
    (4, 3, 3, 1, False),    # odd map
])
def test_routed_convolution_matches_aten_in_float64(channels, size, k, stride, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels, bias=bias).double()
    x = torch.randn(3, channels, size, size, dtype=torch.float64)
    grad = torch.randn_like(conv(x))
    assert routes(x.requires_grad_(), conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
    ref = _grads(conv, x.detach(), grad, torch.enable_grad)
    new = _grads(conv, x.detach(), grad, small_map_depthwise)
    for a, b in zip(ref, new):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_only_small_cpu_depthwise_training_calls_route():
    w_dw = torch.randn(8, 1, 5, 5, requires_grad=True)
    small, large = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 16, 16)
    assert routes(small, w_dw, 1, 2, 1, 8)
    assert not routes(large, w_dw, 1, 2, 1, 8)                       # oneDNN is faster there
    assert not routes(small, torch.randn(8, 8, 5, 5, requires_grad=True), 1, 2, 1, 1)  # not depthwise
    assert not routes(small, w_dw, 1, "same", 1, 8)                   # padding not an int
    assert not routes(small, w_dw, 1, 2, 2, 8)                        # dilated
    assert not routes(small, w_dw.detach(), 1, 2, 1, 8)               # frozen: no gradient wanted
    with torch.no_grad():
        assert not routes(small, w_dw, 1, 2, 1, 8)


@pytest.mark.parametrize("shape,pad,value", [
    ((2, 6, 8, 8), (0, 1, 0, 1), 0.0),     # timm's "same" before a 3x3 stride-2 convolution
    ((2, 6, 7, 5), (1, 2, 2, 1), 0.0),     # uneven sides, odd map
    ((1, 4, 3, 3), (2, 0, 0, 3), -1.5),    # a constant other than zero
])
def test_channels_last_pad_matches_aten_in_float64(shape, pad, value):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).to(memory_format=torch.channels_last)
    assert pads_channels_last(x, pad, "constant")
    outs, grads = [], []
    for mode in (torch.enable_grad, small_map_depthwise):
        leaf = x.detach().clone().requires_grad_()
        with mode():
            y = F.pad(leaf, pad, value=value)
        y.backward(torch.arange(y.numel(), dtype=torch.float64).view(y.shape))
        outs.append(y.detach())
        grads.append(leaf.grad)
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def test_only_constant_spatial_pads_of_channels_last_batches_route():
    x = torch.randn(2, 6, 8, 8)
    cl = x.to(memory_format=torch.channels_last)
    assert pads_channels_last(cl, (0, 1, 0, 1), "constant")
    assert not pads_channels_last(x, (0, 1, 0, 1), "constant")        # NCHW: ATen's pad is fine there
    assert not pads_channels_last(cl, (0, 1, 0, 1), "reflect")
    assert not pads_channels_last(cl, (0, 1), "constant")             # one side only
    assert not pads_channels_last(cl, (0, 1, 0, 1, 1, 1), "constant")  # the channels too
    assert not pads_channels_last(cl, (-1, 1, 0, 1), "constant")      # a crop


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_student_step_under_the_mode_matches_the_plain_step(memory_format):
    """A whole timm student (nn.Conv2d and Conv2dSame layers) gets the same gradients either way, in NCHW
    and in channels_last (where distill.run trains it, and where Conv2dSame's pads route)."""
    torch.manual_seed(0)
    student = Student("tf_efficientnet_lite0", 3, 64).double().to(memory_format=memory_format)
    views, labels = torch.rand(2, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 2])
    views = views.to(memory_format=memory_format)
    grads = []
    for mode in (torch.enable_grad, small_map_depthwise):
        student.zero_grad()
        with mode():
            loss = F.cross_entropy(student(views), labels)
        loss.backward()
        grads.append([p.grad.clone() for p in student.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)


def test_the_mode_takes_the_routed_layers(monkeypatch):
    """Lite0 at 64 px has depthwise layers on maps no larger than their kernel, and stride-2 layers that pad
    ("same"), and the mode routes both."""
    import distill.depthwise as dw
    calls = []
    monkeypatch.setattr(dw._SmallMapDepthwise, "apply", lambda *a: calls.append(a[0].shape) or F.conv2d(
        a[0], a[1], a[2], a[3], a[4], 1, a[0].shape[1]))
    pads = []
    monkeypatch.setattr(dw._ChannelsLastPad, "apply",
                        lambda x, *pad: pads.append(pad) or F.pad(x, pad[:4], value=pad[4]))
    student = Student("tf_efficientnet_lite0", 3, 64).to(memory_format=torch.channels_last)
    with small_map_depthwise():
        student(torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)).sum().backward()
    assert calls and all(shape[-1] <= 7 for shape in calls)
    assert len(pads) == 5  # Conv2dSame before the stem and each stride-2 depthwise convolution


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_100"])
def test_students_activations_run_out_of_place(name):
    """In-place ReLU6 and hard-swish make autograd clone their input: students run them out of place."""
    student = Student(name, 3, 64)
    layers = [m for m in student.modules() if isinstance(m, CLONED_IN_PLACE)]
    assert layers and not any(m.inplace for m in layers)
