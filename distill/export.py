"""What a finished student leaves behind: a ``torch.export`` program, and its measured latency."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from curator import atomic
from curator.errors import CuratorError

from .models import Student


@torch.inference_mode()
def latency_ms(model: nn.Module, size: int, repeats: int = 10) -> float:
    """Batch-1 latency on the device the model sits on (the student is measured on a CPU copy)."""
    model.eval()
    x = torch.rand(1, 3, size, size, device=next(model.parameters()).device)
    model(x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(x)
    sync()
    return round(1000 * (time.perf_counter() - t0) / repeats, 2)


def export_student(student: Student, size: int, path: Path) -> str:
    """The student as a ``torch.export`` program (input: [0, 1] RGB at ``size``, any batch size;
    normalisation built in), checked to reproduce the eager model's logits before it is written."""
    student.eval()
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(student, (example,), dynamic_shapes={"views": {0: batch}})
    with torch.inference_mode():
        same = torch.allclose(program.module()(example[:1]), student(example[:1]), atol=1e-4, rtol=1e-4)
    if not same:
        raise CuratorError("the exported student does not reproduce the eager model; not exported")
    atomic.write_with(path, lambda p: torch.export.save(program, str(p)))
    return str(path)
