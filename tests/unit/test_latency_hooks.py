"""scripts/latency_hooks.py: every hook still fits what it wraps. A method renamed or given
another argument made trace_latency.py silently trace nothing there, or raise in every
claim (`Scheduler._my_turn` took two more arguments than its hook passed on)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from scripts.scriptlib import load_script

hooks = load_script("latency_hooks")  # BANZAI_TRACE_DIR unset: it installs nothing
HOOKS = [*hooks.peer_hooks(), *hooks.worker_hooks()]


def _placeholders(sig: inspect.Signature) -> tuple[list[Any], dict[str, Any]]:
    """An argument for every parameter of `sig`: positionally where it may be given so."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(object())
        elif p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = object()
    return args, kwargs


@pytest.mark.parametrize(("owner", "name", "make"), HOOKS,
                         ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n, _ in HOOKS])
def test_each_hook_takes_every_argument_of_what_it_wraps(owner: Any, name: str,
                                                         make: Any) -> None:
    fn = getattr(owner, name, None)
    assert fn is not None, f"{name} is gone: the trace would skip it"
    assert not getattr(fn, "_traced", False)  # nothing installed in this process
    wrapper = make(fn)
    args, kwargs = _placeholders(inspect.signature(fn))
    inspect.signature(wrapper).bind(*args, **kwargs)  # TypeError if one does not fit


def test_a_hook_that_drops_arguments_is_caught() -> None:
    """The check itself: a hook of fewer parameters than its method does not bind."""
    def method(self: Any, ak: Any, ranked: Any, step_s: Any = None) -> None: ...

    def narrow(fn: Any) -> Any:
        def w(self: Any, ak: Any, ranked: Any) -> Any:
            return fn(self, ak, ranked)
        return w

    args, kwargs = _placeholders(inspect.signature(method))
    with pytest.raises(TypeError):
        inspect.signature(narrow(method)).bind(*args, **kwargs)
