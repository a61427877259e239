"""How answers are checked: ``jsonschema`` (the ``structured`` extra), with ``multipleOf`` compared in decimal.

A float ``multipleOf`` such as 0.01 makes ``jsonschema`` refuse ``0.07`` (``0.07 / 0.01`` is not a whole float);
the grammar writes numbers as decimal text, so the check compares the shortest decimal of each float instead.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Any

from llava_edge.errors import MissingExtraError

INSTALL_HINT = 'Install it with: pip install "llava-edge[structured]"'


def jsonschema_module() -> Any:
    """The ``jsonschema`` module.

    Raises:
        MissingExtraError: it is not installed.
    """
    try:
        import jsonschema
    except ImportError as err:
        raise MissingExtraError(f"Structured output checks answers with jsonschema, which is missing. {INSTALL_HINT}"
                                ) from err
    return jsonschema


def validator_class(schema: dict[str, Any]) -> Any:
    """The validator class for ``schema``'s draft (``$schema``; 2020-12 when absent), ``multipleOf`` decimal."""
    jsonschema = jsonschema_module()
    return _decimal_validator(jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator))


def validator_for(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` (answers are checked with it)."""
    return validator_class(schema)(schema)


def validation_error(value: Any, schema: dict[str, Any]) -> str | None:
    """The first reason ``value`` does not validate against ``schema``, or ``None``."""
    jsonschema = jsonschema_module()
    error = jsonschema.exceptions.best_match(validator_for(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the document"
    return f"at {where}: {error.message[:300]}"


def known_keywords(schema: dict[str, Any]) -> frozenset[str]:
    """The keywords the validator of ``schema``'s draft checks; any other keyword is an annotation to it."""
    return frozenset(validator_class(schema).VALIDATORS)


def decimal(number: int | float) -> Decimal:
    """The shortest decimal that reads back as ``number`` (``0.1``, not the float's exact binary value)."""
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


@cache
def _decimal_validator(base: Any) -> Any:
    jsonschema = jsonschema_module()

    def multiple_of(validator: Any, divisor: Any, instance: Any, schema: dict[str, Any]) -> Any:
        if not validator.is_type(instance, "number"):
            return
        if decimal(instance) % decimal(divisor) != 0:
            yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor}")

    return jsonschema.validators.extend(base, {"multipleOf": multiple_of})
