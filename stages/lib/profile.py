"""Profile a table of strings into a schema: each column's type, role, flags and policy, each
with the reason it was inferred (what `pipeline init` writes into params.yaml).

Identifiers are found by content with the project's own detectors: the scrubber's patterns
(e-mail, phone, national ids with their checksums, cards, IBANs, IP addresses, URLs), python-stdnum
validators for national numbers written without separators, and the name shapes anonymize's
mislabel guard uses. Column names only add what content cannot tell apart (an age from any
number, a postcode from any five digits). Pure functions over DataFrames of strings.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd

from stages.lib.config import PolicyParam
from stages.lib.features import Policy, column_policies
from stages.lib.params import coerce
from stages.lib.schema import Column, Schema
from stages.lib.scrub import TITLES, scrub_column

# A column is an identifier when at least this share of its values is one entity as a whole
# (anonymize's guard stops a released column at 50%: decide below it).
ID_SHARE = 0.5
# Names: share and count as in anonymize's guard (a column of a few cities is no list of
# people; small tables need a quarter of their rows as distinct names).
NAME_MIN_DISTINCT = 50
TYPE_SHARE = 0.98  # a type holds when this share of the non-missing values parses as it
KEY_DISTINCT_SHARE = 0.98  # a key may repeat for the duplicates clean removes
TEXT_MEAN_CHARS = 25  # mean length of free text (CJK: 10 characters say as much)
TEXT_MEAN_CHARS_CJK = 10
TEXT_MEAN_WORDS = 4
CATEGORY_MAX = 100  # most distinct values of a categorical column ...
CATEGORY_SHARE = 0.05  # ... or at most this share of the rows distinct
MAX_CLASSES = 100

ENTITY_PII = {
    "EMAIL": "email",
    "PHONE": "phone",
    "US_SSN": "national_id",
    "CN_RESIDENT_ID": "national_id",
    "CREDIT_CARD": None,
    "IBAN": None,
    "IP_ADDRESS": None,
    "URL": None,
}
ENTITY_WORDS = {
    "EMAIL": "e-mails",
    "PHONE": "phone numbers",
    "US_SSN": "US social security numbers",
    "CN_RESIDENT_ID": "Chinese resident ids (GB 11643 check digit)",
    "CREDIT_CARD": "payment card numbers (Luhn)",
    "IBAN": "IBANs (mod 97)",
    "IP_ADDRESS": "IP addresses",
    "URL": "URLs",
}
# anonymize's _PERSON_NAME shape (Given Surname, a 2-4 character Chinese name) in Python syntax,
# plus the register form "Surname, Title. Given" of passenger and patient lists.
_CJK = "\u4e00-\u9fff"
_TITLES = sorted(TITLES | {"master", "rev", "col", "major", "capt", "lady", "countess", "jonkheer"})
PERSON_NAME = re.compile(
    r"^[A-Z][a-z]+(?:-[A-Z][a-z]+)?\.?(?: [A-Z]\.)*"
    r"(?: (?:(?:van|de|von|der|da|di|le|la) )*[A-Z][A-Za-z'-]+){1,2}$"
    f"|^[{_CJK}]{{2,4}}$"
    r"|^[A-Z][A-Za-z' -]+, (?i:" + "|".join(_TITLES) + r")\.? [A-Z(]"
)
# A number and a street word, or a Chinese road/number/room.
ADDRESS = re.compile(
    r"(?i)\d+[a-z]?,? (?:[\w.'-]+ ){1,4}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|way|"
    r"boulevard|blvd|court|ct|place|pl|terrace|close|crescent|square|sq|highway|hwy|straße|"
    r"strasse|weg|rue|calle|via)\b|[路街道巷]\d*号|\broom \d+"
)
POSTCODE = re.compile(
    r"^(?:\d{5}(?:-\d{4})?|\d{6}|\d{4}|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d"
    r"|\d{4} ?[A-Z]{2}|\d{3}-\d{4})$",
    re.IGNORECASE,
)
GENDER = {"male", "female", "m", "f", "man", "woman", "men", "women", "男", "女", "other",
          "non-binary", "nonbinary", "diverse", "x"}  # fmt: skip
RACE = {"white", "black", "asian", "hispanic", "latino", "other", "asian-pac-islander",
        "amer-indian-eskimo", "caucasian", "african american", "native american",
        "pacific islander", "mixed", "multiracial", "indian", "arab"}  # fmt: skip
BOOL = ({"true", "false"}, {"yes", "no"}, {"t", "f"}, {"y", "n"})
LABEL_NAMES = ("label", "labels", "target", "class", "y", "outcome", "sentiment")
KEY_HINT = re.compile(r"(?i)(^|_|\b)(id|key|uuid|guid|no|nr|number)$|id$")
NAME_HINTS = {
    "age": re.compile(r"(?i)^(age|ages|age_years|年龄)$"),
    "birth": re.compile(r"(?i)birth|dob|born|geburt|出生"),
    "postcode": re.compile(r"(?i)post.?code|zip|postal|plz|邮编"),
    "race": re.compile(r"(?i)race|ethnic|religion|sexual_orientation"),
}
# National numbers that no scrubber pattern knows, checked with python-stdnum: checksummed
# ones only (random digits pass a mod-11 or Verhoeff check one time in ten at most, so a share
# of ID_SHARE cannot come from chance).
NATIONAL_NUMBERS = {
    "nl.bsn": "Dutch citizen service numbers (11-proof)",
    "gb.nhs": "NHS numbers (mod 11)",
    "de.idnr": "German tax ids (ISO 7064)",
    "br.cpf": "Brazilian CPFs (mod 11)",
    "in_.aadhaar": "Aadhaar numbers (Verhoeff)",
    "es.dni": "Spanish DNIs (check letter)",
}
SAMPLE_DISTINCT = 5000  # distinct values the detectors look at (a random sample beyond that)


@dataclass
class ColumnProfile:
    """What init infers about one column, with why."""

    name: str
    type: str = "string"
    role: str = "attribute"
    quasi: bool = False
    sensitive: bool = False
    pii: str | None = None
    format: str | None = None
    values: list[str] | None = None
    policy: Any = None  # None: the role's default (anonymize's DEFAULT_BY_ROLE)
    why: list[str] = field(default_factory=list)
    policy_why: str = ""
    kind: str | None = None  # age | birth | event | postcode | gender: what its policy follows
    date_format: str | None = None

    def spec(self) -> dict[str, Any]:
        """The column's entry under schema.columns."""
        out: dict[str, Any] = {"type": self.type, "role": self.role}
        for k in ("quasi", "sensitive"):
            if getattr(self, k):
                out[k] = True
        for k in ("pii", "format", "values"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def present(values: pd.Series, missing: set[str]) -> pd.Series:
    """The non-missing values, trimmed (the missing-value spellings compared case-insensitively)."""
    s = values.dropna().astype(str).str.strip()
    return s[~s.str.lower().isin(missing)]


def _share(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def infer_type(s: pd.Series, date_formats: list[str]) -> tuple[str, str, str | None]:
    """(type, why, date format) of non-missing string values."""
    if s.empty:
        return "string", "no values", None
    low = set(s.str.lower().unique())
    if any(low <= b for b in BOOL):
        return "bool", f"only {'/'.join(sorted(low))}", None
    ints = s.str.fullmatch(r"[+-]?\d{1,18}")
    if _share(ints) >= TYPE_SHARE:
        zeros = s.str.fullmatch(r"0\d+")
        if zeros.any():
            return "string", f"digits with leading zeros ({int(zeros.sum())} values): a code", None
        return "int", f"integers {_span(s[ints])}", None
    nums = pd.to_numeric(s, errors="coerce")
    if _share(nums.notna()) >= TYPE_SHARE:
        return "float", f"numbers {_span(s[nums.notna()])}", None
    if _share(
        s.str.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?")
    ) >= (TYPE_SHARE):
        return "timestamp", "ISO date-times", None
    for fmt in date_formats:
        parsed = pd.to_datetime(s, format=fmt, errors="coerce")
        if _share(parsed.notna()) >= TYPE_SHARE:
            return "date", f"dates ({fmt}), {parsed.min():%Y}-{parsed.max():%Y}", fmt
    return "string", "", None


def _span(s: pd.Series) -> str:
    n = pd.to_numeric(s, errors="coerce")
    return f"{n.min():g}..{n.max():g}"


def entity_share(distinct: pd.Series, counts: pd.Series) -> tuple[str | None, float]:
    """The entity found as whole values most often (scrubber patterns, then checksummed national
    numbers), and its share of the rows."""
    scrubbed = pd.Series(scrub_column(distinct.tolist(), min_digit_run=None)[0].to_pylist())
    whole = scrubbed.str.extract(r"^<([A-Z_]+)>$")[0].to_numpy()
    by_entity = counts.groupby(whole).sum() if pd.notna(whole).any() else pd.Series(dtype=int)
    compact = distinct.str.replace(r"[\s.-]", "", regex=True)
    for module, words in NATIONAL_NUMBERS.items():
        valid = compact.map(importlib.import_module(f"stdnum.{module}").is_valid).astype(bool)
        by_entity[words] = counts[valid.to_numpy()].sum()
    if by_entity.empty or by_entity.max() == 0:
        return None, 0.0
    top = str(by_entity.idxmax())
    return top, float(by_entity.max() / counts.sum())


def detect_identifier(s: pd.Series) -> tuple[str | None, str] | None:
    """(pii kind, why) when the values are direct identifiers, else None."""
    counts = s.value_counts()
    if len(counts) > SAMPLE_DISTINCT:
        counts = counts.sample(n=SAMPLE_DISTINCT, random_state=0)
    distinct = pd.Series(counts.index.astype(str))
    counts = counts.reset_index(drop=True)
    entity, share = entity_share(distinct, counts)
    if entity is not None and share >= ID_SHARE:
        if entity in ENTITY_WORDS:
            return ENTITY_PII[entity], f"{share:.0%} of values are {ENTITY_WORDS[entity]}"
        return "national_id", f"{share:.0%} of values are {entity}"
    named = distinct.str.match(PERSON_NAME)
    n_named = int(named.sum())
    share = counts[named].sum() / counts.sum()
    if share >= ID_SHARE and n_named >= min(NAME_MIN_DISTINCT, max(2, len(s) // 4)):
        return "name", f"{share:.0%} of values are shaped like personal names ({n_named} distinct)"
    share = counts[distinct.str.contains(ADDRESS)].sum() / counts.sum()
    if share >= ID_SHARE:
        return "address", f"{share:.0%} of values are street addresses (number and street)"
    return None


def is_cjk(s: pd.Series) -> bool:
    """Whether most values hold Chinese characters."""
    return _share(s.str.contains(f"[{_CJK}]")) >= 0.5


def profile_column(
    name: str, raw: pd.Series, missing: set[str], formats: list[str]
) -> ColumnProfile:
    """Type, role and flags of one (non-label) column, with why."""
    p = ColumnProfile(name)
    s = present(raw, missing)
    n, distinct = len(s), s.nunique()
    p.type, why, fmt = infer_type(s, formats)
    if why:
        p.why.append(why)
    if fmt:
        p.format, p.date_format = "date", fmt
    digits = s.str.len().median() >= 9 if n else False
    if p.type == "string" or (p.type == "int" and digits):  # national numbers are digits
        found = detect_identifier(s) if n else None
        if found:
            p.role, p.pii, p.type = "identifier", found[0], "string"
            p.format = "email" if found[0] == "email" else None
            p.why.append(found[1])
            return p
    if p.type in ("int", "float"):
        p.role = "numeric"
        if NAME_HINTS["age"].match(name) and _share(pd.to_numeric(s).between(0, 120)) >= 0.95:
            p.quasi, p.kind = True, "age"
            p.why.append("an age (named so, 0..120): quasi-identifier")
        return p
    if p.type in ("date", "timestamp"):
        return _dates(p, name, s)
    return _strings(p, name, s, n, distinct)


def _dates(p: ColumnProfile, name: str, s: pd.Series) -> ColumnProfile:
    years = pd.to_datetime(s, errors="coerce", format="mixed").dt.year.dropna()
    past = len(years) and years.max() <= date.today().year - 10
    wide = len(years) and years.max() - years.min() >= 30
    p.quasi, p.kind = True, "event"
    if NAME_HINTS["birth"].search(name) or (past and wide):
        p.kind = "birth"
        p.why.append("a date of birth (" + ("named so" if NAME_HINTS["birth"].search(name)
                     else "all past, spread over decades") + "): quasi-identifier")  # fmt: skip
        p.pii = None
    else:
        p.why.append("a date of an event: quasi-identifier, not a feature")
    return p


def _strings(p: ColumnProfile, name: str, s: pd.Series, n: int, distinct: int) -> ColumnProfile:
    low = s.str.lower()
    if p.type == "bool":
        p.role = "categorical"
        return p
    if n and _share(low.isin(GENDER)) >= 0.95 and distinct <= 12:  # messy spellings too
        p.role, p.type, p.quasi, p.sensitive = "categorical", "category", True, True
        p.kind = "gender"
        p.why.append("values are genders: quasi-identifier and sensitive (fairness slices)")
        return p
    race_words = low.isin(RACE)
    race_like = _share(race_words) >= 0.9 and low[race_words].nunique() >= 3
    if n and (NAME_HINTS["race"].search(name) or race_like) and distinct <= CATEGORY_MAX:
        p.role, p.type, p.sensitive = "categorical", "category", True
        p.why.append("race/ethnicity-like values: sensitive (fairness slices)")
        return p
    if NAME_HINTS["postcode"].search(name) and _share(s.str.fullmatch(POSTCODE)) >= 0.9:
        p.role, p.type, p.quasi, p.kind = "attribute", "string", True, "postcode"
        p.why.append("postcodes (named so, postcode-shaped): quasi-identifier")
        return p
    cjk = is_cjk(s) if n else False
    mean_chars = s.str.len().mean() if n else 0
    mean_words = s.str.split().str.len().mean() if n else 0
    long = mean_chars >= (TEXT_MEAN_CHARS_CJK if cjk else TEXT_MEAN_CHARS)
    if long or (mean_words >= TEXT_MEAN_WORDS and distinct / max(n, 1) >= 0.5):
        p.role = "text"
        p.why.append(
            f"free text: mean {mean_chars:.0f} characters, {distinct / max(n, 1):.0%} distinct"
        )
    elif distinct <= max(2, min(CATEGORY_MAX, max(20, CATEGORY_SHARE * n))):
        p.role, p.type = "categorical", "category"
        p.why.append(f"{distinct} distinct values")
    else:
        p.role = "identifier"
        p.why.append(f"short codes, {distinct / n:.0%} distinct: id-like, not a feature (dropped)")
    return p


def is_key_like(name: str, raw: pd.Series, p: ColumnProfile, missing: set[str]) -> str | None:
    """Why the column can be the source record key (unique, id-shaped), else None."""
    if p.role not in ("identifier", "numeric", "categorical") or p.pii or p.type == "float":
        return None
    s = present(raw, missing)
    if len(s) < len(raw) * 0.99 or s.empty:
        return None
    unique = s.nunique() / len(s)
    if unique < KEY_DISTINCT_SHARE or s.str.contains(r"\s").any() or s.str.len().max() > 40:
        return None
    shape = s.str.replace(r"\d", "9", regex=True).str.replace(r"[A-Za-z]", "a", regex=True)
    uniform = shape.value_counts().iloc[0] / len(s) >= 0.9
    if KEY_HINT.search(name) or uniform:
        how = "named like an id" if KEY_HINT.search(name) else "one id shape"
        return f"{unique:.1%} distinct, {how}: the source record key"
    return None


def choose_key(df: pd.DataFrame, profiles: dict[str, ColumnProfile], missing: set[str]) -> None:
    """Make the best key-like column the key (role key), if any."""
    found = {n: w for n, p in profiles.items() if (w := is_key_like(n, df[n], p, missing))}
    if not found:
        return
    best = sorted(found, key=lambda n: (not KEY_HINT.search(n), list(df.columns).index(n)))[0]
    p = profiles[best]
    p.role, p.pii, p.quasi = "key", None, False
    p.type = "string"  # an id is a label, not a quantity (leading zeros, no arithmetic)
    p.why = [found[best]]


def label_profile(name: str, raw: pd.Series, missing: set[str]) -> ColumnProfile:
    """The label column: its values (the rarer class last) and class shares."""
    s = present(raw, missing)
    counts = s.value_counts()
    if len(counts) < 2:
        raise ValueError(
            f"label column '{name}' has {len(counts)} class(es) {list(counts.index)}: a "
            "classifier needs two or more; pass --label with the right column"
        )
    if len(counts) > MAX_CLASSES:
        raise ValueError(
            f"label column '{name}' has {len(counts)} distinct values: not a class label "
            f"(at most {MAX_CLASSES}); pass --label with the right column"
        )
    values = sorted(counts.index, key=lambda v: (-counts[v], v))
    shares = ", ".join(f"{v} {counts[v] / len(s):.1%}" for v in values[:6])
    p = ColumnProfile(name, type="category", role="label", values=[str(v) for v in values])
    p.why.append(f"the label ({len(values)} classes: {shares}{', ...' if len(values) > 6 else ''})")
    return p


def guess_label(df: pd.DataFrame, missing: set[str]) -> tuple[str, str]:
    """(column, why) of the likely label when none was given."""
    for c in df.columns:
        if str(c).lower() in LABEL_NAMES:
            return c, f"named '{c}'"
    last = df.columns[-1]
    n = present(df[last], missing).nunique()
    if 2 <= n <= 20:
        return last, f"the last column, {n} values (pass --label to choose another)"
    raise ValueError(
        "no label column found (none named label/target/class/y/outcome, and the last column "
        f"'{last}' has {n} distinct values): name it with --label COLUMN"
    )


def class_share_bounds(p: ColumnProfile, raw: pd.Series, missing: set[str]) -> dict[str, Any]:
    """validate's min/max class share from the data: half the rarest share, and halfway from
    the commonest share to 1; with the observed shares for the comment."""
    shares = present(raw, missing).value_counts(normalize=True)
    lo, hi = float(shares.min()), float(shares.max())
    return {
        "min_class_share": math.floor(lo / 2 * 1000) / 1000,
        "max_class_share": min(0.99, math.ceil((hi + (1 - hi) / 2) * 1000) / 1000),
        "rarest": lo,
        "commonest": hi,
        "majority": shares.idxmax(),
        "minority": shares.idxmin(),
    }


def profile_frame(
    df: pd.DataFrame, label: str, missing: list[str], date_formats: list[str]
) -> dict[str, ColumnProfile]:
    """Every column's profile (label, key, identifiers, features, quasi/sensitive flags)."""
    miss = {m.strip().lower() for m in missing}
    out = {}
    for name in df.columns:
        if name == label:
            out[name] = label_profile(name, df[name], miss)
        else:
            out[name] = profile_column(name, df[name], miss, date_formats)
    choose_key(df, out, miss)
    return out


# ---------------------------------------------------------------------------------------------
# Policies

# Largest share of rows init lets anonymize suppress (classes smaller than k over the released
# quasi-identifiers): beyond it, quasi-identifiers are coarsened one step at a time.
MAX_SUPPRESSED = 0.05
GEN = "generalize"


def nulled(df: pd.DataFrame, missing: set[str]) -> pd.DataFrame:
    """The frame with missing-value spellings as nulls (pandas string dtype)."""
    out = df.astype("string")
    return out.mask(out.apply(lambda c: c.str.strip().str.lower().isin(missing)))


def quasi_levels(p: ColumnProfile, has_age: bool) -> list[Any]:
    """A quasi-identifier's policies from finest to coarsest."""
    if p.kind == "birth":
        return ["drop"] if has_age else [{"action": GEN, "date": "year"}, "drop"]
    if p.kind == "event":
        return [{"action": GEN, "date": "month"}, {"action": GEN, "date": "year"}, "drop"]
    if p.kind == "postcode":
        return [{"action": GEN, "truncate": n} for n in (3, 2, 1)] + ["drop"]
    if p.role == "numeric":
        return ["keep"] + [{"action": GEN, "band": b} for b in (5, 10, 20)]
    return ["keep"]


def released(values: pd.Series, policy: Any) -> pd.Series | None:
    """A column as anonymize releases it under `policy` (None: dropped)."""
    from stages.lib.anon_policies import generalize

    if policy == "drop":
        return None
    if policy == "keep":
        return values
    return generalize(values, Policy(**policy))


def suppressed_share(columns: dict[str, pd.Series | None], k: int) -> float:
    """Share of rows in equivalence classes smaller than k over the released columns."""
    from stages.lib.anon_risk import quasi_hashes, sizes_of

    kept = {n: s.reset_index(drop=True) for n, s in columns.items() if s is not None}
    if not kept:
        return 0.0
    sizes = sizes_of(quasi_hashes(pd.DataFrame(kept)))
    return float((sizes < k).mean())


def choose_policies(
    df: pd.DataFrame, profiles: dict[str, ColumnProfile], k: int, missing: set[str]
) -> float:
    """Set each column's policy: identifiers dropped; quasi-identifiers at the finest level
    that leaves at most MAX_SUPPRESSED of the rows in classes smaller than k (coarsening, one
    step at a time, the column that helps most). Returns the share suppressed."""
    for p in profiles.values():
        if p.role == "identifier":
            p.policy, p.policy_why = "drop", "a direct identifier: never released"
    quasi = [n for n, p in profiles.items() if p.quasi]
    has_age = any(profiles[n].kind == "age" for n in quasi)
    levels = {n: quasi_levels(profiles[n], has_age) for n in quasi}
    data = nulled(df[quasi], missing)
    at = dict.fromkeys(quasi, 0)

    def share(pos: dict[str, int]) -> float:
        return suppressed_share({n: released(data[n], levels[n][pos[n]]) for n in quasi}, k)

    current = initial = share(at)
    coarsened = []
    while current > MAX_SUPPRESSED:
        options = [(share({**at, n: at[n] + 1}), n) for n in quasi if at[n] + 1 < len(levels[n])]
        if not options:
            break
        current, n = min(options)
        at[n] += 1
        coarsened.append(n)
    for n in quasi:
        p, policy = profiles[n], levels[n][at[n]]
        p.policy = None if policy == "keep" else policy
        p.policy_why = _policy_why(p, policy, has_age)
        if n in coarsened:
            p.policy_why += (
                f"; coarsened: the finest forms left {initial:.0%} of the sampled rows in "
                f"classes smaller than k={k}, now {current:.1%}"
            )
    return current


def _policy_why(p: ColumnProfile, policy: Any, has_age: bool) -> str:
    if p.kind == "birth":
        if has_age:
            return "age (a feature) already carries it; a birth date would only add risk"
        return "a date of birth: its year at most" if policy != "drop" else "a date of birth"
    if p.kind == "postcode":
        return "a postcode's leading characters only (its area)"
    if p.kind == "event":
        return "a date of an event: month or year only"
    return "a quasi-identifier: released as measured" if policy == "keep" else "in bands"


def guard_check(df: pd.DataFrame, profiles: dict[str, ColumnProfile], missing: set[str]) -> None:
    """Run anonymize's mislabel guard on the sample under the inferred schema and policies; a
    column it would stop on becomes an identifier (dropped), so `make run` does not stop there."""
    import secrets

    from stages.lib.anon_index import index_part
    from stages.lib.anon_policies import apply_policies
    from stages.lib.anon_scan import mislabelled_columns

    schema = Schema(
        {
            n: Column(**{**p.spec(), "values": tuple(p.values) if p.values else None})
            for n, p in profiles.items()
        }
    )
    written = {n: p.policy for n, p in profiles.items() if p.policy is not None}
    # The policies as params.yaml will hold them, typed as anonymize reads them from there.
    overrides = coerce(dict[str, PolicyParam], written, "anonymize.policies")
    policies = column_policies(schema, overrides)
    data = nulled(df, missing)
    anon, _ = apply_policies(data, schema, policies, secrets.token_bytes(32), None)
    suspects = mislabelled_columns(anon, schema, policies, index_part(data, schema, policies))
    for name, why in suspects.items():
        p = profiles[name]
        p.role, p.pii, p.type, p.quasi, p.sensitive = "identifier", None, "string", False, False
        p.why.append(f"anonymize's guard would stop on it: {why}")
        p.policy, p.policy_why = "drop", "a direct identifier: never released"


def base_rate_gap(
    df: pd.DataFrame,
    profiles: dict[str, ColumnProfile],
    label: str,
    positive: str,
    missing: set[str],
    min_size: int,
) -> tuple[float, str]:
    """The largest gap, over the sensitive columns, between groups (of at least min_size rows)
    in the data's own rate of the positive class, and where it is."""
    best, where = 0.0, ""
    data = nulled(df, missing)
    for name, p in profiles.items():
        if not p.sensitive:
            continue
        groups = data.groupby(name)[label]
        rates = groups.apply(lambda s: (s == positive).mean())[groups.size() >= min_size]
        if len(rates) >= 2 and rates.max() - rates.min() > best:
            best = float(rates.max() - rates.min())
            where = f"{name} groups {rates.idxmax()!r} and {rates.idxmin()!r}"
    return best, where
