"""The data schema from params.yaml: columns, their types and roles."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from stages.lib.params import ParamsError, coerce, load_params

ColumnType = Literal["string", "int", "float", "category", "date", "timestamp", "bool"]
# Types whose min/max are calendar bounds (ISO dates in params.yaml), not numbers.
TEMPORAL_TYPES = ("date", "timestamp")
Role = Literal["key", "label", "numeric", "categorical", "text", "identifier", "attribute"]

# Columns every stage adds to the source's own: row-level lineage.
RECORD_ID = "record_id"
BATCH = "_batch"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
LINEAGE_COLUMNS = (RECORD_ID, BATCH, SOURCE_FILE, SOURCE_ROW)
# What anonymize releases of them: source positions stay on the raw side (lineage trace reads
# them there), since a row number can be a public table's dropped id.
RELEASED_LINEAGE = (RECORD_ID, BATCH)
# Columns of a quarantined row: why it was set aside (with the value where it is no identifier),
# and the value-free kind of that reason; both composed from typed reasons in lib/reasons.py.
REASON, REASON_KIND = "_reason", "_reason_kind"
# augment's flag on the rows it added (train weighs them, lineage trace follows them).
AUGMENTED = "_augmented"


@dataclass(frozen=True)
class Column:
    """One column of the source table."""

    type: ColumnType
    role: Role
    quasi: bool = False
    sensitive: bool = False
    pii: Literal["name", "email", "phone", "national_id", "address"] | None = None
    format: Literal["email", "phone", "date"] | None = None
    # Numbers for int/float columns; ISO dates (`1900-01-01`) for date/timestamp columns.
    min: Any = None
    max: Any = None
    values: tuple[str, ...] | None = None
    nullable: bool | None = None
    # true: anonymize's mislabel guard may not stop on this released column (it looked like an
    # identifier, but you know it is not: e.g. a column of place names shaped like names).
    not_identifier: bool = False

    def __post_init__(self) -> None:
        # Bounds as their column's type (a date for dates); load_schema reports a bad one.
        for which in ("min", "max"):
            value = getattr(self, which)
            if value is not None:
                object.__setattr__(self, which, _bound(self.type, value))

    @property
    def required(self) -> bool:
        """Whether a null is an error (keys and labels are required unless said otherwise)."""
        return not self.nullable if self.nullable is not None else self.role in ("key", "label")


def _bound(type_: str, value: Any) -> Any:
    """A min/max bound as its column's type (a date for dates, a float for numbers); a value
    that is neither stays as given, for `check_bounds` to report."""
    if type_ in TEMPORAL_TYPES:
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        try:
            return datetime.date.fromisoformat(str(value))
        except ValueError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def check_bounds(name: str, col: Column) -> None:
    """Raise ParamsError for a min/max that does not fit its column's type."""
    want = datetime.date if col.type in TEMPORAL_TYPES else float
    for which in ("min", "max"):
        value = getattr(col, which)
        if value is not None and not isinstance(value, want):
            expected = "an ISO date (YYYY-MM-DD)" if want is datetime.date else "a number"
            raise ParamsError(
                f"schema.columns.{name}.{which}: expected {expected} for a {col.type} column, "
                f"got {value!r}"
            )
    if col.min is not None and col.max is not None and col.min > col.max:
        raise ParamsError(f"schema.columns.{name}: min {col.min} is above max {col.max}")


@dataclass(frozen=True)
class Schema:
    """All columns, in source order."""

    columns: dict[str, Column] = field(default_factory=dict)

    def with_role(self, *roles: str) -> list[str]:
        """Names of the columns whose role is one of `roles`, in schema order."""
        return [n for n, c in self.columns.items() if c.role in roles]

    @property
    def key(self) -> str | None:
        """The source record key column, or None when the data has none (record_id then comes
        from the row's content, see stages/ingest.py). More than one is a ParamsError."""
        keys = self.with_role("key")
        if len(keys) > 1:
            raise ParamsError(
                f"schema: {len(keys)} columns have role 'key' ({keys}); at most one may: give the "
                "others another role (e.g. attribute), or none for keyless data"
            )
        return keys[0] if keys else None

    @property
    def label(self) -> str:
        """The label column."""
        labels = self.with_role("label")
        if len(labels) != 1:
            raise ValueError(f"schema: exactly one column needs role 'label', found {labels}")
        return labels[0]

    @property
    def classes(self) -> list[str]:
        """The label's allowed values, in params order."""
        values = self.columns[self.label].values
        if not values:
            raise ParamsError(
                f"schema.columns.{self.label}: the label needs its 'values', the list of classes "
                f"(e.g. values: [yes, no]); add it in params.yaml"
            )
        return list(values)

    @property
    def quasi_identifiers(self) -> list[str]:
        """Columns flagged quasi-identifiers."""
        return [n for n, c in self.columns.items() if c.quasi]

    @property
    def sensitive(self) -> list[str]:
        """Columns flagged sensitive attributes (fairness slices)."""
        return [n for n, c in self.columns.items() if c.sensitive]


def load_schema(params: dict[str, Any] | None = None) -> Schema:
    """Read and check the `schema` section of params.yaml."""
    params = load_params() if params is None else params
    schema = coerce(Schema, params.get("schema", {}), "schema")
    _ = schema.key, schema.label, schema.classes  # fail early on a malformed schema
    for name, col in schema.columns.items():
        check_bounds(name, col)
    return schema
