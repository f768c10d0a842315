"""Splitting a batch into onnxruntime calls: by size class, small groups folded upward.

A call pads every row to its largest member, so a batch is split by size
(windows by length, step-graph runs by their number of new events); but a
call also has a fixed cost, so a size class too light for a call of its own
joins the next larger one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def by_size(items: Iterable[T], size_class: Callable[[T], int], weight: Callable[[T], int],
            minimum: int) -> list[list[T]]:
    """``items`` in groups of one or more size classes, smallest first: one call each.

    Classes are added to a group until it weighs at least ``minimum``; what is
    left at the end (the largest, too light alone) joins the last group. Within
    a class, items keep their order.
    """
    classes: dict[int, list[T]] = {}
    for item in items:
        classes.setdefault(size_class(item), []).append(item)
    groups: list[list[T]] = []
    pending: list[T] = []
    pending_weight = 0
    for size in sorted(classes):
        pending += classes[size]
        pending_weight += sum(weight(item) for item in classes[size])
        if pending_weight >= minimum:
            groups.append(pending)
            pending, pending_weight = [], 0
    if pending:
        if groups:
            groups[-1] += pending
        else:
            groups.append(pending)
    return groups
