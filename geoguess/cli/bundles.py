"""Option bundles: a group of options declared once, taken by a command as one object.

As sqlite-utils' ``output_options`` and llm's option decorators do for click, a bundle
is a frozen dataclass whose fields are typer options (``Annotated`` aliases with
defaults). ``@bundled("name", Bundle)`` on a command puts the bundle's fields into the
command's signature, where typer sees them as ordinary options, and hands the command
one ``Bundle`` instance under ``name`` instead of a dozen parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def bundled(name: str, bundle: type) -> Callable[[F], F]:
    """Expand ``bundle``'s fields into the options of the decorated command, which takes
    them back as one ``bundle`` object in its parameter ``name``.

    The fields take the place of ``name`` in the signature, so ``--help`` lists them
    where the command declares the bundle.
    """
    fields = dataclasses.fields(bundle)
    hints = typing.get_type_hints(bundle, include_extras=True)
    expanded = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in fields
    ]

    def decorate(command: F) -> F:
        own_hints = typing.get_type_hints(command, include_extras=True)
        params = []
        for p in inspect.signature(command).parameters.values():
            if p.name == name:
                params.extend(expanded)
            else:
                # Resolved annotations: typer reads this signature as it is.
                annotation = own_hints.get(p.name, p.annotation)
                kind = inspect.Parameter.KEYWORD_ONLY
                params.append(p.replace(annotation=annotation, kind=kind))
        if not any(p.name == name for p in inspect.signature(command).parameters.values()):
            raise TypeError(f"{command.__name__} has no parameter {name!r} for {bundle.__name__}")
        clash = {f.name for f in fields} & set(own_hints) - {name}
        if clash:
            raise TypeError(f"{command.__name__} already has options {sorted(clash)}")

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = bundle(**{f.name: kwargs.pop(f.name) for f in fields})
            return command(*args, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the expanded signature, not the command's
        return wrapper  # type: ignore[return-value]

    return decorate
