"""A study's preregistered stopping rule (`Study.plan["stopping"]`): what it may say, checked in one place.

It lives with the studies (the lowest layer that needs it) so that locking a plan, admitting participants and
the analysis deciding to stop all read the same rule. Applying it is `analysis.stopping`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from peftlab.errors import UserInputError

RULES = ("anytime",)


@dataclass(frozen=True)
class StoppingRule:
    """Stop admitting when every headline row is decided by the anytime-valid test, or at max_participants.

    alpha: the level of the anytime-valid tests (after the e-Holm correction over the headline rows).
    min_participants: never stop before this many participants have finished. max_participants: stop when
    this many have finished, decided or not. futility: optional half-width of a band around 0.5; a row whose
    confidence sequence lies inside [0.5 - futility, 0.5 + futility] counts as settled (practically no
    preference). adaptive: with three or more arms, allocate each participant's pairs where one more
    participant narrows the widest undecided confidence sequence most (studies.allocation).
    """

    rule: str = "anytime"
    alpha: float = 0.05
    min_participants: int = 10
    max_participants: int = 200
    futility: float | None = None
    adaptive: bool = False

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UserInputError(f"unknown stopping rule {self.rule!r}; use one of {list(RULES)}")
        if not 0 < self.alpha < 1:
            raise UserInputError(f"stopping alpha must be in (0, 1), got {self.alpha}; e.g. 0.05")
        if not 1 <= self.min_participants <= self.max_participants:
            raise UserInputError(
                "stopping needs 1 <= min_participants <= max_participants, got "
                f"{self.min_participants} and {self.max_participants}"
            )
        if self.futility is not None and not 0 < self.futility < 0.5:
            raise UserInputError(f"futility must be a half-width in (0, 0.5), got {self.futility}; e.g. 0.05")

    @classmethod
    def from_plan(cls, stopping: Any) -> StoppingRule:
        """The rule a plan's `stopping` object describes, or a UserInputError saying what is wrong with it."""
        if not isinstance(stopping, dict):
            raise UserInputError(
                'stopping must be an object like {"rule": "anytime", "alpha": 0.05, '
                '"min_participants": 10, "max_participants": 200}'
            )
        unknown = sorted(set(stopping) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserInputError(f"unknown stopping key(s) {unknown}; use {sorted(cls.__dataclass_fields__)}")
        values = dict(stopping)
        if not isinstance(values.get("rule", "anytime"), str):
            raise UserInputError(f"stopping rule must be a name like 'anytime', got {values['rule']!r}")
        if not isinstance(values.get("adaptive", False), bool):
            raise UserInputError(f"stopping adaptive must be true or false, got {values['adaptive']!r}")
        for key in ("alpha", "futility", "min_participants", "max_participants"):
            if values.get(key) is not None:
                values[key] = _number(key, values[key], integer=key.endswith("participants"))
        return cls(**values)

    @classmethod
    def from_study(cls, study: Any) -> StoppingRule | None:
        """The study's preregistered rule, or None when its plan has none."""
        stopping = (study.plan or {}).get("stopping")
        return None if stopping is None else cls.from_plan(stopping)

    def allocates(self, arms: Sequence[str]) -> bool:
        """Whether participants' pairs are allocated adaptively for a study of these arms."""
        return self.adaptive and len(arms) >= 3

    def to_plan(self) -> dict[str, Any]:
        """The rule as the plan stores it."""
        return asdict(self)


def _number(key: str, value: Any, *, integer: bool) -> int | float:
    """A plan's number as int or float, or a UserInputError (JSON has no ints apart from floats like 10.0)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not float(value).is_integer())
    ):
        kind = "a whole number" if integer else "a number"
        raise UserInputError(f"stopping {key} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)
