"""Dispatch: one rule of a grid's rules per lane, chosen by a (traced) index, and the checked mode.

:func:`switch` is what the grid's program and :func:`poe_jax.kernels.policy.steer` call: only
the rules listed are in the program. :func:`apply` composes and reports the prior's fallback;
:func:`checked` makes invalid inputs raise inside the caller's own ``jit``/``vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from poe_jax.kernels.gaussian import DiagGaussian
from poe_jax.kernels.rules import Rule, RuleInputs, _is_traced, get, prior_valid

__all__ = ["Composed", "apply", "checked", "switch"]


class Composed(NamedTuple):
    """Result of :func:`apply`: the composed policy and the per-state fallback mask."""

    dist: DiagGaussian
    fallback: jax.Array  # [...] bool: some prior dimension was invalid, the actor was used there


def apply(rule: str | Rule, actor: DiagGaussian, prior: DiagGaussian, param=None) -> Composed:
    """Compose and report where the prior was invalid (for counting fallbacks)."""
    r = get(rule)
    return Composed(r(actor, prior, param), ~prior_valid(prior))


def switch(rules: tuple[str | Rule, ...], index, x: RuleInputs, call: Callable | None = None):
    """The rule ``rules[index]`` (``index`` may be traced) at inputs ``x``: ``call(rule, x)``, by
    default :meth:`Rule.evaluate` (the composed policy).

    Only the listed rules are in the program: a grid passes its own rules, so a poe-only
    grid costs what ``poe`` costs (under ``vmap`` a ``lax.switch`` evaluates every branch
    and selects). Each branch sees ``param`` clipped to its own range: lanes of another
    rule carry another rule's coefficient, which must not poison the branch they discard.
    """
    rs = [get(r) for r in rules]
    if not rs:
        raise ValueError("switch: rules is empty")
    call = Rule.evaluate if call is None else call
    x = x._replace(param=jnp.asarray(x.param, x.actor.mean.dtype))
    if len(rs) == 1:
        return call(rs[0], x)
    # Branches close over x: the critic's q_fn is a function, not an operand.
    branches = [functools.partial(_branch, r, i, call, x=x) for i, r in enumerate(rs)]
    return jax.lax.switch(index, branches, jnp.asarray(index))


def _branch(rule: Rule, i: int, call: Callable, index, *, x: RuleInputs):
    # The lane's own rule sees its coefficient as given (an invalid one still poisons with NaN
    # or fails a check); the branches a lane discards see it clipped to their range.
    if rule.param is not None:
        x = x._replace(param=jnp.where(index == i, x.param, jnp.clip(x.param, rule.lo, rule.hi)))
    return call(rule, x)


def checked(fn: Callable) -> Callable:
    """Jitted ``fn`` whose invalid inputs raise, also inside your own ``jit``/``vmap``.

    Called eagerly it raises checkify's ``JaxRuntimeError`` with the check's message. Traced (e.g.
    ``jax.jit(checked(f))``), the check runs on the device and raises when the program runs: an error
    whose message contains the check's (a host callback, so it costs one round trip per call).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from poe_jax.kernels.rules import poe
        >>> a = DiagGaussian(jnp.zeros(2), jnp.ones(2))
        >>> safe_vmapped = checked(jax.vmap(poe, in_axes=(None, None, 0)))
        >>> safe_vmapped(a, a, jnp.array([0.5, 1.5]))
        Traceback (most recent call last):
        ...
        jax._src.checkify.JaxRuntimeError: alpha must be in [0.0, 1.0]; got alpha=1.5...
    """
    from jax.experimental import io_callback

    functional = checkify.checkify(fn)
    compiled = jax.jit(functional)

    def throw(err) -> np.ndarray:
        err.throw()
        return np.zeros((), np.int32)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_traced((args, kwargs)):  # inside the caller's transformation: check when it runs
            err, out = functional(*args, **kwargs)
            io_callback(throw, jax.ShapeDtypeStruct((), jnp.int32), err)
            return out
        err, out = compiled(*args, **kwargs)
        err.throw()
        return out

    return wrapper
