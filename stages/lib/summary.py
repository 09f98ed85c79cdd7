"""The JSON summary every stage writes: row accounting, duration, peak memory, and the stage's
own typed fields (stages/lib/summaries.py)."""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.lib.io import write_json_atomic
from stages.lib.paths import METRICS_DIR
from stages.lib.summaries import Model, Summary, dump, summary_model

__all__ = ["METRICS_DIR", "AccountingError", "StageSummary", "peak_memory_mb"]


class AccountingError(RuntimeError):
    """Rows in do not equal rows out + quarantined + duplicates - added."""


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass
class StageSummary:
    """Counts a stage reports; `check()` enforces in = out + quarantined + duplicates - added.

    `fields`: the stage's own facts, its `...Fields` model from stages.lib.summaries.
    """

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    added: int = 0
    quarantined: Counter = field(default_factory=Counter)
    fields: Model | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def rows_quarantined(self) -> int:
        """Rows sent to quarantine, all reasons together."""
        return sum(self.quarantined.values())

    def check(self) -> None:
        """Raise AccountingError unless every row is accounted for."""
        accounted = self.rows_out + self.rows_quarantined + self.duplicates - self.added
        if accounted != self.rows_in:
            raise AccountingError(
                f"{self.stage}: rows in ({self.rows_in}) != rows out ({self.rows_out}) "
                f"+ quarantined ({self.rows_quarantined}) + duplicates ({self.duplicates}) "
                f"- added ({self.added}); {self.rows_in - accounted} row(s) unaccounted for"
            )

    def to_dict(self) -> dict[str, Any]:
        """The summary as written to metrics/<stage>.json (not validated: see `model`)."""
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
            "duplicates": self.duplicates,
            "rows_added": self.added,
            "duration_s": round(time.perf_counter() - self.started, 3),
            "peak_memory_mb": peak_memory_mb(),
            **(dump(self.fields) if self.fields is not None else {}),
        }

    def model(self) -> Summary:
        """The summary validated by the stage's model (pydantic.ValidationError if it does not
        match: a missing, misspelt or mistyped field is a bug in the stage)."""
        return summary_model(self.stage).model_validate(self.to_dict())

    def write(self, path: Path | str | None = None) -> Summary:
        """Check the accounting, validate and write the summary atomically; return it."""
        self.check()
        summary = self.model()
        write_json_atomic(path or METRICS_DIR / f"{self.stage}.json", dump(summary))
        return summary
