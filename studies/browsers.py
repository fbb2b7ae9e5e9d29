"""Which browser a participant used, read from its User-Agent header (family and version; the rest is dropped)."""

import re
from dataclasses import dataclass

# Order matters: Edge, Opera and Samsung Internet also say "Chrome/", Chrome also says "Safari/".
_FAMILIES = (
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/([\d.]+)")),
    ("Opera", re.compile(r"\b(?:OPR|OPiOS|Opera)/([\d.]+)")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/([\d.]+)")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/([\d.]+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/([\d.]+)")),
    ("Safari", re.compile(r"\bVersion/([\d.]+).*\bSafari/")),
)


@dataclass(frozen=True)
class Browser:
    """A browser family ("Chrome", "Safari", ...; "Other" when unknown, "" without a header) and its version."""

    family: str
    version: str


def browser_parse(user_agent: str) -> Browser:
    """The family and version a User-Agent header names."""
    if not user_agent.strip():
        return Browser("", "")
    for family, pattern in _FAMILIES:
        match = pattern.search(user_agent)
        if match:
            return Browser(family, match.group(1)[:30])
    return Browser("Other", "")
