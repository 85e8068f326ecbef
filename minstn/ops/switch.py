"""The one switch between the plain op pairs (minstn.ops) and the fast ones (minstn.ops.fast).

    from minstn.ops.switch import ops      # what the models call: ops.conv2d_maxpool_forward(...)
    with use_fast(False):                  # every model runs the plain versions inside the block
        loss, _ = model.loss_and_grads(images, labels, rng)

`ops` answers every name of minstn.ops: the fast version where minstn.ops.fast has one and the
switch is on (the default), else the plain one. Both take the same arguments and give the same
numbers (tests/test_ops_fast.py, tests/test_models.py), so the switch changes only the speed.
"""
from __future__ import annotations

import contextlib

import minstn.ops as plain
import minstn.ops.fast as fast

__all__ = ["ops", "use_fast", "fast_enabled"]

_FAST = [True]


def fast_enabled() -> bool:
    return _FAST[0]


@contextlib.contextmanager
def use_fast(on: bool = True):
    """Within the block the models use the fast op pairs (on) or the plain ones (off)."""
    before = _FAST[0]
    _FAST[0] = bool(on)
    try:
        yield
    finally:
        _FAST[0] = before


class _Chosen:
    """minstn.ops as the models see it: each name from minstn.ops.fast when the switch is on and it
    has one, else from minstn.ops."""

    def __getattr__(self, name):
        if _FAST[0] and name in fast.__all__:
            return getattr(fast, name)
        return getattr(plain, name)

    def __dir__(self):
        return sorted(set(plain.__all__) | set(fast.__all__))


ops = _Chosen()
