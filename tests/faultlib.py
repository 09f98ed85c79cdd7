"""Reliability test helpers: the DAG from dvc.yaml, tree hashes, fault hooks, secret scans."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import yaml

from tests.conftest import ROOT, project_copy, source_frame, venv_env

# The fault hook: a sitecustomize module that stage processes load through PYTHONPATH.
HOOK_DIR = Path(__file__).resolve().parent / "faults"
SAMPLE = "data/sample/customers_batch1.csv.gz"
# Rows of the sample batch the end-to-end fault tests run on: enough to exercise every stage,
# few enough to keep each pipeline run to seconds.
SAMPLE_ROWS = 1500


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    """The stages of dvc.yaml in file order (which is the DAG's order in this project)."""
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def stage_outputs(stage: dict) -> list[str]:
    """Every path a stage writes: outs, metrics and plots."""
    paths: list[str] = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []) or []:
            paths.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return paths


def uncached_outputs(stage: dict) -> list[str]:
    """Outputs declared `cache: false` (run metadata such as durations: not reproducible)."""
    out = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []) or []:
            if isinstance(entry, dict):
                (path, opts), *_ = entry.items()
                if opts and opts.get("cache") is False:
                    out.append(path)
    return out


def module_stages(root: Path = ROOT) -> list[str]:
    """Names of the dvc.yaml stages that run a module of this project (`python -m stages.X`) and
    write something (the final `gate` stage only reads evaluate's verdict and exits)."""
    return [
        n
        for n, s in dvc_stages(root).items()
        if str(s["cmd"]).startswith("python -m stages.")
        and any(s.get(k) for k in ("outs", "metrics", "plots"))
    ]


def tree_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    """SHA-256 of every file under the given paths (relative to root); hidden entries included."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftover_temporaries(root: Path) -> list[str]:
    """Temporary siblings that AtomicDir / write_*_atomic leave only when interrupted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob(".*")
        if (".tmp-" in p.name or ".old-" in p.name) and ".git" not in p.parts
    )


def sample_batch(rows: int = SAMPLE_ROWS) -> bytes:
    """The first `rows` rows of the bundled sample batch (gzip, fixed mtime); a generated
    batch in the same schema while the repository has no sample yet."""
    src = ROOT / SAMPLE
    if src.is_file():
        frame = pd.read_csv(src, dtype=str, keep_default_na=False, nrows=rows)
    else:
        frame = source_frame(rows)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(frame.to_csv(index=False).encode("utf-8"))
    return buf.getvalue()


def pipeline_clone(dest: Path) -> Path:
    """A fresh git clone-alike of the project with a small sample batch, ready for `dvc repro`."""
    dest.mkdir(parents=True, exist_ok=True)
    project_copy(dest)
    (dest / SAMPLE).parent.mkdir(parents=True, exist_ok=True)
    (dest / SAMPLE).write_bytes(sample_batch())
    # A model trained on 1,500 rows cannot pass the quality gate meant for the full sample;
    # these tests are about faults, so the clone switches the evaluation thresholds off.
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["evaluate"]["gate"] = dict.fromkeys(params["evaluate"]["gate"])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "small sample", "--allow-empty"], cwd=dest, check=True)
    return dest


def dvc(root: Path, *args: str, env: dict | None = None, timeout: int = 600):
    """Run dvc in `root`, capturing output."""
    return subprocess.run(
        ["dvc", *args],
        cwd=root,
        env=env or venv_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fault_env(spec: str, log: Path, **extra: str) -> dict[str, str]:
    """Environment that arms the fault hook in stage processes: FAULT_SPEC=stage:mode:n."""
    env = venv_env(**extra)
    # The repository's own .pipeline-cache, as in a user's run: the hook sees its writes.
    env.pop("PIPELINE_PARTITION_CACHE", None)
    env["PYTHONPATH"] = str(HOOK_DIR)
    env["FAULT_SPEC"] = spec
    env["FAULT_LOG"] = str(log)
    return env


def read_fault_log(log: Path) -> list[dict]:
    """The events the fault hook recorded."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- secret scan


def secret_forms(secret: str) -> list[bytes]:
    """The byte forms a leaked secret would take: raw, hex, base64 (standard and URL-safe)."""
    raw = secret.encode("utf-8")
    forms = {
        raw,
        raw.hex().encode(),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        secret.encode("utf-16-le"),
    }
    return sorted(forms)


def decoded_views(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    """The file's bytes plus what its compressed or columnar content decodes to."""
    views = [(str(path), data)]
    try:
        if data[:2] == b"\x1f\x8b":
            views.append((f"{path} (gunzipped)", gzip.decompress(data)))
        elif data[:4] == b"PAR1":
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            text = table.to_pandas().astype(str).to_csv().encode("utf-8")
            views.append((f"{path} (parquet values)", text))
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for name in z.namelist():
                    views.append((f"{path}!{name}", z.read(name)))
    except Exception as e:  # a file that cannot be decoded is still scanned as bytes
        views.append((f"{path} (undecodable: {type(e).__name__})", b""))
    return views


def scan_for_secrets(
    roots: list[Path], secrets: list[str], skip: tuple[Path, ...] = ()
) -> tuple[int, list[str]]:
    """Scan every file under `roots` (and decoded content) for any form of any secret.

    Returns (files scanned, findings as 'file: which secret').
    """
    forms = {s: secret_forms(s) for s in secrets}
    skipped = set(skip)
    findings: list[str] = []
    scanned = 0
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f in skipped or f.is_symlink():
                continue
            scanned += 1
            for where, data in decoded_views(f, f.read_bytes()):
                for secret, variants in forms.items():
                    if any(v in data for v in variants):
                        findings.append(f"{where}: holds a form of {secret[:4]}…")
    return scanned, findings


def forget_stored_partitions(repo: Path) -> None:
    """Delete the stored partition results, so that a stage run does all its work (and writes)."""
    shutil.rmtree(repo / ".pipeline-cache", ignore_errors=True)
