"""The registry of selection strategies: one decorated function each, found by name.

A strategy turns a :class:`Request` (the queries' vectors, a search function and the shared
dedup and contamination rules) into a :class:`~curator.select.Selection`. Adding one is one
function here (or in a plugin module) with ``@register_strategy``: ``CurateParams`` validates
``strategy`` against this registry, and the CLI's choices and the API's schema come from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from .errors import CuratorError
from .select import Search, Selection, select_balanced, select_random, select_threshold

if TYPE_CHECKING:
    from .formats import CurateParams


@dataclass
class Request:
    """Everything a strategy may use. ``rules`` holds the keyword arguments every selection shares:
    ``vectors_of``, ``forbidden``, ``ntotal``, ``dedup``, ``exclude_threshold``, ``cells``, ``links``, ``near``."""
    search: Search
    vectors: np.ndarray                    # query views, L2-normalised
    owner: np.ndarray                      # the query each view belongs to
    labels: Sequence[Optional[str]]
    rules: dict = field(default_factory=dict)
    cancelled: Callable[[], bool] = lambda: False

    @property
    def n_queries(self) -> int:
        return len(self.labels)


Strategy = Callable[[Request, "CurateParams"], Selection]
_STRATEGIES: dict[str, Strategy] = {}
_NEEDS_LABELS: set[str] = set()


def register_strategy(name: str, *, needs_labels: bool = False) -> Callable[[Strategy], Strategy]:
    """Register ``fn(request, params) -> Selection`` under ``name`` (``needs_labels``: every query
    must carry a label, checked when a request is validated rather than inside the job)."""
    def wrap(fn: Strategy) -> Strategy:
        _STRATEGIES[name] = fn
        if needs_labels:
            _NEEDS_LABELS.add(name)
        return fn
    return wrap


def strategy_names() -> list[str]:
    return list(_STRATEGIES)


def needs_labels(name: str) -> bool:
    return name in _NEEDS_LABELS


def select(request: Request, params: "CurateParams") -> Selection:
    if params.strategy not in _STRATEGIES:
        raise CuratorError(f"unknown strategy {params.strategy!r}; choose one of {', '.join(_STRATEGIES)}")
    if needs_labels(params.strategy) and any(label is None for label in request.labels):
        raise CuratorError(f"{params.strategy} needs a label for every query (class sub-folders or a 'label' column)")
    return _STRATEGIES[params.strategy](request, params)


@register_strategy("balanced")
def balanced(req: Request, params: "CurateParams") -> Selection:
    """The paper's query-balanced retrieval: every query gets the same number of unique images."""
    k = params.per_query if params.per_query is not None else (params.budget or 0) // max(1, req.n_queries)
    if k <= 0:
        raise CuratorError(f"budget {params.budget} gives no image per query for {req.n_queries} queries; "
                           f"raise --budget or set --per-query")
    quotas = np.full(req.n_queries, k, dtype=np.int64)
    return select_balanced(req.search, req.owner, req.n_queries, quotas, cancelled=req.cancelled, **req.rules)


@register_strategy("class-balanced", needs_labels=True)
def class_balanced(req: Request, params: "CurateParams") -> Selection:
    """Each class an equal share, split evenly over its queries."""
    labels = list(req.labels)
    classes = sorted(set(labels))
    per_class = (params.per_query * max(labels.count(c) for c in classes) if params.per_query
                 else (params.budget or 0) // len(classes))
    quotas = np.array([per_class // labels.count(lab) for lab in labels], dtype=np.int64)
    if quotas.min() <= 0:
        raise CuratorError(f"budget {params.budget} is too small for {len(classes)} classes; raise --budget")
    return select_balanced(req.search, req.owner, req.n_queries, quotas, cancelled=req.cancelled, **req.rules)


@register_strategy("threshold")
def threshold(req: Request, params: "CurateParams") -> Selection:
    """Everything above a similarity, best first, up to the budget."""
    return select_threshold(req.search, req.owner, req.n_queries, params.threshold, params.budget, **req.rules)


@register_strategy("random")
def random_draw(req: Request, params: "CurateParams") -> Selection:
    """The paper's control: a uniform pool draw of the same size, under the same rules."""
    budget = params.budget or params.per_query * req.n_queries
    return select_random(req.vectors, req.owner, budget, params.seed, **req.rules)
