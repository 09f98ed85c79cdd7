"""The pseudonymisation key and keyed HMAC pseudonyms.

The key comes from the environment variable PIPELINE_HMAC_KEY (production: set it from a secret
store or a Prefect Secret block); for demos only, from a git-ignored file of a random key made by
`pipeline demo-key`; and for the bundled sample only (public data, synthetic identities), from
SAMPLE_KEY, a fixed key published here so that every machine gets the same record_ids, split and
metrics from the sample. A real key never goes into params.yaml, git, logs or artefacts; only its
identifier (an HMAC of a fixed label, which reveals nothing of the key) is recorded, so a
rotation shows.
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
# The published demo key: used only when no other key is set and every batch is one of the
# bundled sample files below. It is public, so it protects nothing: never use it for real data.
SAMPLE_KEY = b"privacy-pipeline published demo key: bundled sample only, never real data"
# SHA-256 of the bundled sample files (data/sample/README.md; tests/test_keys.py checks them).
# A file counts as the sample by content, not by place: a copy in data/incoming (the new-data
# demo) still is the sample, and real data saved over data/sample/ is not.
SAMPLE_SHA256 = frozenset(
    {
        "186f9b54dbeb4aac3393a0b5d77ec1fa981d83825dd9ac0cd830f5bced65d61e",  # customers_batch1
        "d17392a5dbfff87ed3e7d65346de49eecf4b79bff8098069953ab821d9be7066",  # customers_batch2
    }
)
# Shortest digest prefix accepted (batch ids carry the first 10 hex digits of their file's hash).
MIN_PREFIX = 10


# How to make a good key, in every message about a missing or unusable one.
GENERATE_HINT = (
    f"export {KEY_ENV}=$(python -c 'import secrets;print(secrets.token_hex(32))') "
    "(64 hex characters, 32 random bytes)"
)


class MissingKeyError(RuntimeError):
    """No pseudonymisation key was provided."""


class BadKeyError(MissingKeyError):
    """A key was provided but cannot serve: not UTF-8 text, or too short."""


def checked_key(raw: bytes, source: str) -> bytes:
    """`raw` as the key when it is UTF-8 text of at least MIN_KEY_BYTES bytes; else a
    BadKeyError naming `source` and how to make a good key (never the key itself)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # Not text: the same variable would give other bytes on another platform or shell.
        raise BadKeyError(
            f"{source} holds bytes that are not UTF-8 text (byte {e.start + 1} of {len(raw)}): "
            f"a key must be text, the same bytes everywhere. Make one with {GENERATE_HINT}"
        ) from None
    if len(raw) < MIN_KEY_BYTES:
        raise BadKeyError(
            f"{source} is too short: {len(raw)} bytes (UTF-8); use at least {MIN_KEY_BYTES} "
            f"bytes of a random secret. Make one with {GENERATE_HINT}"
        )
    return raw


def is_sample(digests: Iterable[str]) -> bool:
    """True when there is at least one digest and every one is (a prefix of) a bundled sample
    file's SHA-256: the data is the public sample, for which the published key may serve."""
    found = list(digests)
    return bool(found) and all(
        len(d) >= MIN_PREFIX and any(s.startswith(d) for s in SAMPLE_SHA256) for d in found
    )


def load_key(sample: bool = False) -> bytes:
    """The HMAC key: $PIPELINE_HMAC_KEY; else the random demo key file; else, when `sample`
    (every batch is the bundled sample, see is_sample), the published SAMPLE_KEY. The two demo
    keys come with a loud warning; with none of them a MissingKeyError says how to set a key."""
    value = os.environ.get(KEY_ENV)
    if value:
        # POSIX hands undecodable bytes over as surrogates: this gets the bytes set back.
        key = checked_key(value.encode("utf-8", "surrogateescape"), KEY_ENV)
    elif DEMO_KEY_FILE.exists():
        key = checked_key(DEMO_KEY_FILE.read_bytes().strip(), f"the demo key file {DEMO_KEY_FILE}")
        print(
            f"WARNING: using the random local DEMO pseudonymisation key in {DEMO_KEY_FILE}. It is "
            f"not for real data: set {KEY_ENV} from your secret store instead.",
            file=sys.stderr,
        )
    elif sample:
        key = SAMPLE_KEY
        print(
            f"WARNING: using the PUBLISHED demo pseudonymisation key (id {key_id(SAMPLE_KEY)}): "
            f"{KEY_ENV} is not set and the data is the bundled sample. Anyone can "
            f"recompute its pseudonyms: for real data, set {KEY_ENV} from your secret store.",
            file=sys.stderr,
        )
    else:
        raise MissingKeyError(
            f"No pseudonymisation key: the published demo key serves only the bundled sample "
            f"(data/sample/), and this data is not it. Set {KEY_ENV} to a secret of at least "
            f"{MIN_KEY_BYTES} bytes from your secret store (or a Prefect Secret block), e.g. "
            f"{GENERATE_HINT}, and keep it: record_ids cannot be rebuilt without it. Or run "
            f"`pipeline demo-key` for a random local demo key in {DEMO_KEY_FILE} (never for real "
            "data)."
        )
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
