"""The one canonical-JSON digest: equal values (whatever their key order) give equal digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """An object as canonical JSON: sorted keys, no spaces, non-JSON values by their str()."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def canonical_digest(obj: Any, length: int | None = None) -> str:
    """SHA-256 of an object's canonical JSON, hex; the first `length` digits when given."""
    full = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return full[:length] if length else full


def text_sha256(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes (a file's digest as read, e.g. dvc.lock)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
