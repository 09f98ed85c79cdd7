"""Why a row was set aside, as typed values: a kind from `Reason` and its detail (the column,
the offending value where it may be shown, what was expected), kept apart from where a stage
finds the problem. The human `_reason` message and the value-free `_reason_kind` are composed
from them here and only here; nothing reads a kind back out of a message."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Reason(StrEnum):
    """Every kind of reason a stage quarantines a row (or nulls a value) for."""

    NOT_A_NUMBER = "not a number"
    NOT_FINITE = "not a finite number"
    NOT_AN_INTEGER = "not an integer"
    NOT_A_BOOLEAN = "not a boolean"
    OUT_OF_RANGE = "out of range"
    MALFORMED_EMAIL = "malformed e-mail"
    UNPARSEABLE_DATE = "unparseable date"
    UNPARSEABLE_TIMESTAMP = "unparseable timestamp"
    MISSING = "missing"
    EXACT_DUPLICATE = "exact duplicate"
    DUPLICATE_KEY = "duplicate key"
    REPLACED = "replaced"  # with on_existing_key: replace, an earlier row a later batch updated
    K_ANONYMITY = "k_anonymity"


# The value-free kind as written to _reason_kind and counted in metrics: a kind about a column
# names it ('age out of range'); the others read as the kind itself.
_KIND_TEXT = {
    Reason.NOT_A_NUMBER: "{column} is not a number",
    Reason.NOT_FINITE: "{column} is not a finite number",
    Reason.NOT_AN_INTEGER: "{column} is not an integer",
    Reason.NOT_A_BOOLEAN: "{column} is not a boolean",
    Reason.OUT_OF_RANGE: "{column} out of range",
    Reason.MALFORMED_EMAIL: "malformed e-mail in {column}",
    Reason.UNPARSEABLE_DATE: "unparseable date in {column}",
    Reason.UNPARSEABLE_TIMESTAMP: "unparseable timestamp in {column}",
    Reason.MISSING: "missing {column}",
}
# What joins the kind and the value in a message: 'age out of range: 430', 'duplicate key of R7'.
_VALUE_JOIN = {
    Reason.EXACT_DUPLICATE: " of ",
    Reason.DUPLICATE_KEY: " of ",
    Reason.REPLACED: " by a later row of ",
}
_DEFAULT_JOIN = ": "
# One row's reason: null where the row has none. value: null where it is not shown (identifier
# values never go into a reason); expected: null where the kind has no expectation to state.
REASON_TYPE = pa.struct(
    [
        pa.field("kind", pa.string()),
        pa.field("column", pa.string()),
        pa.field("value", pa.string()),
        pa.field("expected", pa.string()),
    ]
)


def kind_text(kind: Reason | str, column: str | None = None) -> str:
    """The value-free kind of one reason ('age out of range', 'exact duplicate')."""
    kind = Reason(kind)
    template = _KIND_TEXT.get(kind)
    return template.format(column=column) if template else str(kind)


def no_reasons(n: int) -> pa.Array:
    """n rows without a reason."""
    return pa.nulls(n, REASON_TYPE)


def reasons(
    mask: np.ndarray,
    kind: Reason,
    column: str | None = None,
    value: pa.Array | None = None,
    expected: str | None = None,
) -> pa.Array:
    """A reason of `kind` on the rows of `mask`, null elsewhere; `value` per row (or None)."""
    n = len(mask)
    if not mask.any():
        return no_reasons(n)
    fields = [
        pa.repeat(pa.scalar(str(kind), pa.string()), n),
        pa.repeat(pa.scalar(column, pa.string()), n),
        pa.nulls(n, pa.string()) if value is None else pc.cast(value, pa.string()),
        pa.repeat(pa.scalar(expected, pa.string()), n),
    ]
    # Null where the mask is not set, through the validity bitmap: no copy of the fields.
    return pa.StructArray.from_arrays(fields, fields=list(REASON_TYPE), mask=pa.array(~mask))


def first_reason(*per_check: pa.Array) -> pa.Array:
    """Per row, the first of several checks' reasons that is not null."""
    return pc.coalesce(*per_check)


def _field(reason: pa.Array, name: str) -> pa.Array:
    # A row without a reason reads null in every field (under a null row they hold anything).
    return pc.if_else(
        pc.is_valid(reason), pc.struct_field(reason, name), pa.scalar(None, pa.string())
    )


def reason_kinds(reason: pa.Array) -> pa.Array:
    """`_reason_kind` of each row: its kind composed with its column; null where no reason."""
    reason = reason.combine_chunks() if isinstance(reason, pa.ChunkedArray) else reason
    kind, column = _field(reason, "kind"), _field(reason, "column")
    pairs = pc.binary_join_element_wise(kind, pc.fill_null(column, ""), "\x1f")
    distinct = pc.drop_null(pc.unique(pairs))
    texts = []
    for pair in distinct.to_pylist():
        k, c = pair.split("\x1f", 1)  # kinds have no \x1f; a column name might
        texts.append(kind_text(k, c or None))
    idx = pc.index_in(pairs, value_set=distinct)
    return pc.take(pa.array(texts, pa.string()), idx)


def reason_messages(reason: pa.Array, kinds: pa.Array | None = None) -> pa.Array:
    """`_reason` of each row, the one place a message is made: kind, then the value joined as
    the kind says (': 430', ' of R7'), then ' (expected ...)'; null where no reason.

    `kinds`: `reason_kinds(reason)`, when the caller has computed it already.
    """
    reason = reason.combine_chunks() if isinstance(reason, pa.ChunkedArray) else reason
    kinds = reason_kinds(reason) if kinds is None else kinds
    kind = _field(reason, "kind")
    joins = pa.array([_VALUE_JOIN.get(k, _DEFAULT_JOIN) for k in Reason], pa.string())
    join = pc.take(joins, pc.index_in(kind, value_set=pa.array(list(Reason), pa.string())))
    value = pc.binary_join_element_wise(join, _field(reason, "value"), "")
    expected = pc.binary_join_element_wise(" (expected ", _field(reason, "expected"), ")", "")
    text = pc.binary_join_element_wise(kinds, pc.fill_null(value, ""), "")
    return pc.binary_join_element_wise(text, pc.fill_null(expected, ""), "")
