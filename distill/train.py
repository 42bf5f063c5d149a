"""One training loop for every stage: AdamW, cosine schedule with warm-up, checkpoints, resume.

A stage is (parameters, a loss over batches, a step count). Every ``ckpt_every`` steps the
modules, optimiser, schedule, step and RNG states are saved atomically; a finished stage writes
a done-marker with its final weights, so a killed run resumes inside the stage it was in.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from curator import atomic
from curator.errors import CuratorError

from . import dist


@dataclass
class StageResult:
    steps: int
    seconds: float
    images: int
    resumed_from: int


def cosine_with_warmup(optimizer, steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_device(batch: tuple, device: Optional[torch.device]) -> tuple:
    """Move a batch's tensors to ``device`` (non-blocking from pinned memory); others unchanged."""
    if device is None or device.type == "cpu":
        return batch
    return tuple(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch)


def forever(loader, device: Optional[torch.device] = None) -> Iterator:
    """Endless batches (epoch after epoch), skipping empty ones, already on ``device``. An epoch in
    which no sample could be loaded is an error, not an endless loop."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):  # distributed: a new disjoint shard each epoch
            loader.sampler.set_epoch(epoch)
        good = 0
        for batch in loader:
            if batch[0] is not None:
                good += 1
                yield to_device(batch, device)
        if not good:
            raise CuratorError(f"no sample of {len(loader.dataset)} could be loaded (every image failed to decode)")
        epoch += 1


class Logger:
    """JSONL log of losses and learning rates, appended (a resumed run continues the file)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **row) -> None:
        if not dist.is_main():
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def run_stage(name: str, modules: dict[str, nn.Module], params: list, loss_fn: Callable[[tuple], torch.Tensor],
              batches: Iterator, steps: int, lr: float, ckpt_dir: Path, logger: Logger, *,
              weight_decay: float = 0.05, ckpt_every: int = 50, progress: bool = False,
              select: Optional[Callable[[], float]] = None, frozen: Sequence[nn.Module] = (), progress_label: str = "",
              forward_mode: Callable[[], ContextManager] = nullcontext) -> StageResult:
    """Train ``params`` for ``steps`` steps (resuming from ``ckpt_dir/name.pt`` if present).

    The loss is computed under ``forward_mode`` (``RunContext.forward_mode``: bf16 autocast on CUDA,
    no loss scaling needed, unlike fp16; faster depthwise gradients and pads on CPU).

    ``frozen`` sub-modules stay in eval mode whenever the modules are put in training mode (a
    linear probe's backbone: its BatchNorm statistics must not drift).

    With ``select`` (a validation score), the modules are scored at every checkpoint and at
    the end, and the best-scoring weights are the stage's result: val picks, test only reports.
    """
    done, ckpt = ckpt_dir / f"{name}.done.pt", ckpt_dir / f"{name}.pt"
    if done.exists():
        state = torch.load(done, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        return StageResult(**state["result"])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = cosine_with_warmup(optimizer, steps, warmup=max(1, steps // 20))
    start, images, seconds = 0, 0, 0.0
    best = Best()
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, images, seconds = state["step"], state["images"], state["seconds"]
        best = Best.restore(state.get("best"))
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    resumed_from = start
    dist.sync_from_main(modules)
    _train_mode(modules, frozen)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start, desc=f"{progress_label}{name}" if progress_label else name, unit="step")
    for step in range(start, steps):
        batch = next(batches)
        with forward_mode():
            loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(p for m in modules.values() for p in m.parameters())  # those without a grad are skipped
        optimizer.step()
        dist.sync_from_main(modules, buffers_only=True)
        schedule.step()
        images += len(batch[0]) * dist.world_size()
        if step % 10 == 0 or step == steps - 1:
            value = round(float(loss.detach()), 5)
            logger.log(stage=name, step=step, loss=value, lr=schedule.get_last_lr()[0])
            if bar:
                bar.set_postfix(loss=f"{value:.4f}")
        if bar:
            bar.update(1)
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            if select is not None:
                _keep_best(best, select(), modules)
                _train_mode(modules, frozen)
            if dist.is_main():
                _save(ckpt, modules, optimizer, schedule, step + 1, images, seconds + time.perf_counter() - t0, best)
            dist.barrier()
    if bar:
        bar.close()
    if select is not None:
        _keep_best(best, select(), modules)
        for key, module in modules.items():
            module.load_state_dict(best.weights[key])
    result = StageResult(steps=steps, seconds=round(seconds + time.perf_counter() - t0, 3), images=images,
                         resumed_from=resumed_from)
    if dist.is_main():
        atomic.write_with(done, lambda p: torch.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                                                      "result": result.__dict__}, p))
        ckpt.unlink(missing_ok=True)
    dist.barrier()
    return result


def _train_mode(modules: dict[str, nn.Module], frozen: Sequence[nn.Module]) -> None:
    for m in modules.values():
        m.train()
    for m in frozen:
        m.eval()


@dataclass
class Best:
    """The best-scoring weights of a stage so far (saved in its checkpoints as a plain dict)."""
    score: float = -1.0
    weights: Optional[dict] = None

    @classmethod
    def restore(cls, saved: Optional[dict]) -> "Best":
        """From a checkpoint; one written before this class kept its weights under "state"."""
        saved = saved or {}
        return cls(saved.get("score", -1.0), saved.get("weights", saved.get("state")))


def _keep_best(best: Best, score: float, modules: dict[str, nn.Module]) -> None:
    if score > best.score:
        best.score = score
        best.weights = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in modules.items()}


def _save(path: Path, modules, optimizer, schedule, step: int, images: int, seconds: float, best: Best) -> None:
    state = {"modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "step": step, "images": images, "seconds": seconds, "best": dataclasses.asdict(best),
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
    atomic.write_with(path, lambda p: torch.save(state, p))


@torch.inference_mode()
def evaluate(model: nn.Module, loader, num_classes: int, device: Optional[torch.device] = None,
             forward_mode: Callable[[], ContextManager] = nullcontext) -> Optional[dict]:
    """Top-1 accuracy and mean per-class accuracy (the honest metric on imbalanced test sets)."""
    model.eval()
    correct = np.zeros(num_classes)
    total = np.zeros(num_classes)
    for views, labels, _ in loader:
        if views is None:
            continue
        with forward_mode():
            pred = model(to_device((views,), device)[0]).argmax(-1).cpu()
        for y, p in zip(labels.tolist(), pred.tolist()):
            total[y] += 1
            correct[y] += int(y == p)
    if total.sum() == 0:
        return None
    seen = total > 0
    return {"accuracy": round(float(correct.sum() / total.sum()), 4),
            "mean_per_class_accuracy": round(float((correct[seen] / total[seen]).mean()), 4), "n": int(total.sum())}
