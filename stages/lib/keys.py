"""The pseudonymisation key and keyed HMAC pseudonyms.

The key comes from the environment variable PIPELINE_HMAC_KEY (production: set it from a secret
store or a Prefect Secret block) or, for demos only, from a git-ignored file made by
`pipeline demo-key`. It never goes into params.yaml, git, logs or artefacts; only its identifier
(an HMAC of a fixed label, which reveals nothing of the key) is recorded, so a rotation shows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

KEY_ENV = "PIPELINE_HMAC_KEY"
DEMO_KEY_FILE = Path(".secrets/demo_hmac.key")
MIN_KEY_BYTES = 16


class MissingKeyError(RuntimeError):
    """No pseudonymisation key was provided."""


def load_key() -> bytes:
    """The HMAC key from $PIPELINE_HMAC_KEY, else the demo key file (with a loud warning)."""
    value = os.environ.get(KEY_ENV)
    if value:
        key = value.encode("utf-8")
    elif DEMO_KEY_FILE.exists():
        key = DEMO_KEY_FILE.read_bytes().strip()
        print(
            f"WARNING: using the DEMO pseudonymisation key in {DEMO_KEY_FILE}. It is fine for the "
            f"bundled sample, not for real data: set {KEY_ENV} from your secret store instead.",
            file=sys.stderr,
        )
    else:
        raise MissingKeyError(
            f"No pseudonymisation key: set the environment variable {KEY_ENV} to a secret of at "
            f"least {MIN_KEY_BYTES} characters (for example from a Prefect Secret block), or run "
            f"`pipeline demo-key` to create a random demo key in {DEMO_KEY_FILE} "
            "(never for real data)."
        )
    if len(key) < MIN_KEY_BYTES:
        raise MissingKeyError(f"{KEY_ENV} is too short: use at least {MIN_KEY_BYTES} characters")
    return key


def create_demo_key(path: Path = DEMO_KEY_FILE) -> Path:
    """Create a random demo key file (git-ignored) unless one exists; return its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / ".gitignore").write_text("*\n")
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path


def key_id(key: bytes) -> str:
    """A short identifier of the key that does not reveal it (recorded in lineage)."""
    return hmac.new(key, b"pipeline-key-id", hashlib.sha256).hexdigest()[:12]


def pseudonymize(key: bytes, values: Iterable[str | None], domain: str) -> list[str | None]:
    """HMAC-SHA256 of each value under `key`, separated by `domain`; None stays None."""
    prefix = domain.encode("utf-8") + b"\x00"
    base = hmac.new(key, prefix, hashlib.sha256)
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        h = base.copy()
        h.update(v.encode("utf-8"))
        out.append(h.hexdigest()[:32])
    return out
