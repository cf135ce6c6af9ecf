"""The policy's `privacy:` section: which kinds of private data are looked for, in which
regions' spellings, and the operator's own patterns. Validated when the policy loads (a bad
region or pattern stops start-up, or keeps the last good policy on reload)."""

from __future__ import annotations

import re
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .numbers import NATIONAL_IDS

Kind = Literal["email", "phone", "card", "iban", "national_id"]
BUILTIN_KINDS: tuple[str, ...] = ("email", "phone", "card", "iban", "national_id")
DEFAULT_KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban")
# Not found but not ruled out: the scan could not finish (an error, the size or time budget),
# or token ids no vocabulary decodes. Each counts as private data of every kind.
UNSCANNED = "unscanned"
TOKEN_IDS = "token_ids"
UNKNOWN_KINDS: tuple[str, ...] = (UNSCANNED, TOKEN_IDS)

# Where people who use an edge box live and write numbers, broadly: the largest economies
# and populations of every continent. International numbers (`+` or `00`) are recognised
# for every country whatever this list says; the list is for national spellings.
DEFAULT_REGIONS: tuple[str, ...] = (
    "US", "CA", "MX", "BR", "AR", "CL", "CO", "PE",
    "GB", "IE", "FR", "DE", "AT", "CH", "BE", "NL", "LU", "ES", "PT", "IT",
    "DK", "SE", "NO", "FI", "PL", "CZ", "SK", "HU", "RO", "BG", "GR", "HR", "SI",
    "EE", "LV", "LT", "UA", "RU", "TR", "IL", "AE", "SA", "EG", "MA", "NG", "KE", "ZA",
    "IN", "PK", "BD", "CN", "HK", "TW", "JP", "KR", "SG", "MY", "TH", "VN", "ID", "PH",
    "AU", "NZ",
)  # fmt: skip

Checksum = Literal["none", "luhn", "mod97", "mod11_2", "mod11_10", "mod37_2", "verhoeff", "damm"]


class _StrictSection(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OperatorPattern(_StrictSection):
    """A site-specific identifier (employee number, patient id): a regular expression and,
    optionally, the checksum a match must pass (python-stdnum's algorithms)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="the kind it reports")
    regex: str = Field(min_length=1, max_length=1000, description="Python regular expression")
    checksum: Checksum = Field("none", description="over the match's letters and digits")
    ignore_case: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _not_builtin(self) -> OperatorPattern:
        if self.name in (*BUILTIN_KINDS, *UNKNOWN_KINDS):
            raise ValueError(f"{self.name!r} is a built-in kind; name the pattern otherwise")
        return self


class PrivacyConfig(_StrictSection):
    kinds: list[Kind] = Field(
        default_factory=lambda: list(DEFAULT_KINDS),
        description="what is looked for; `national_id` validates the regions' identifiers",
    )
    regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REGIONS),
        min_length=1,
        description="ISO 3166 regions whose national phone and id spellings are recognised",
    )
    patterns: list[OperatorPattern] = Field(default_factory=list)
    max_scan_chars: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="text past this is not scanned and the request counts as private",
    )
    timeout_ms: int = Field(
        2000, ge=10, description="a scan past this counts the request as private"
    )

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, v: list[str]) -> list[str]:
        regions = [r.strip().upper() for r in v]
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown ISO 3166 regions: {unknown}")
        return list(dict.fromkeys(regions))

    @model_validator(mode="after")
    def _unique_patterns(self) -> PrivacyConfig:
        names = [p.name for p in self.patterns]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"pattern names must be unique: {sorted(dup)}")
        return self

    def all_kinds(self) -> tuple[str, ...]:
        """Every kind a scan under this configuration can report."""
        return (*self.kinds, *(p.name for p in self.patterns), *UNKNOWN_KINDS)

    def national_id_regions(self) -> list[str]:
        return [r for r in self.regions if r in NATIONAL_IDS] if "national_id" in self.kinds else []
