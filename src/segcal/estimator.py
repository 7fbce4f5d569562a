"""The contract every calibrator follows (scikit-learn and MAPIE v1 conventions).

- The constructor stores its arguments under their own names, exactly as given (:meth:`get_params`
  reads them back, :meth:`set_params` changes them; both validate names).
- ``fit(stream)`` learns from ``(logits, labels)`` batches and returns ``self``; everything it learns is
  an attribute whose name ends in ``_`` (``temperature_``, ``group_map_``).
- Using an unfitted estimator raises :class:`NotFittedError`.
- ``state_dict()`` / ``load_state_dict(state)`` round-trip the fitted state as plain tensors and
  containers (safe to store in a weights-only checkpoint).

This module imports nothing heavy.
"""
from __future__ import annotations

import inspect
from typing import Any


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (or ``load_state_dict``)."""


class Estimator:
    """Base class: parameter introspection, a readable ``repr`` and the fitted check."""

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, in order."""
        return [name for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, by name, as stored."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Change parameters (validated like the constructor's); returns ``self``. The fit is not changed."""
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(self.param_names())}")
        type(self)(**{**self.get_params(), **params})  # validate the combination first
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``load_state_dict``) has run."""
        return getattr(self, "_fitted", False)

    def check_is_fitted(self) -> None:
        """:class:`NotFittedError` unless fitted."""
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(...) or "
                                 "load_state_dict(...) first")
