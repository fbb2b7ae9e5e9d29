"""The Methods and Results paragraphs of a study, written from the report's own numbers (pure, no Django).

`StudyDesign` says what the report cannot know from the responses alone (the arms and questions asked, the
prompts, the attention checks, the preregistered plan); `design_from_frame` guesses it from an export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.stats.display import DisplayNames, interval, number, p_value, percent
from analysis.stats.inference import EXACT, GEE, SIGN
from analysis.stats.report import Exclusions, Headline, StudyReport
from peftlab.versions import package_versions

SOFTWARE = ("numpy", "pandas", "scipy", "statsmodels", "matplotlib")
# Why each headline test was chosen, keyed by its method name (inference's constants).
TEST_REASONS = {
    EXACT: (
        "an exact two-sided binomial test against 50%, because each participant gave one vote on this "
        "comparison, so the votes are independent"
    ),
    GEE: (
        "a two-sided one-sample t test of participants' own shares against 50% (each participant counted "
        "once, participants - 1 degrees of freedom), because participants gave several votes each and one "
        "person's votes are correlated"
    ),
    SIGN: (
        "an exact sign test over participants (each participant's majority), because the votes had no "
        "spread for a t test (all one way, or every participant's share the same)"
    ),
}


@dataclass(frozen=True)
class PlanStatus:
    """A preregistered plan: its SHA-256, when it was locked, and the deviations recorded since."""

    sha256: str
    locked_at: str
    deviations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: sha256, locked_at, deviations."""
        return {"sha256": self.sha256, "locked_at": self.locked_at, "deviations": list(self.deviations)}

    def sentence(self) -> str:
        """'Preregistered (sha256 ...), no deviations.' or the deviations listed."""
        head = f"The analysis plan was preregistered (sha256 {self.sha256}, locked {self.locked_at})"
        if not self.deviations:
            return f"{head}, no deviations."
        listed = "; ".join(
            f"{d.get('change', '')} ({d.get('at', '')}): {d.get('reason', '')}" for d in self.deviations
        )
        count = len(self.deviations)
        return f"{head}, with {count} deviation{'s' if count > 1 else ''}: {listed}."


@dataclass(frozen=True)
class StudyDesign:
    """What was asked: arms, questions (keys in order), prompts, attention checks, and the plan if locked."""

    arms: list[str]
    questions: list[str]
    prompts: int
    attention_checks: int
    plan: PlanStatus | None = None
    software: dict[str, str] = field(default_factory=lambda: package_versions(SOFTWARE))


def design_from_frame(frame: pd.DataFrame) -> StudyDesign:
    """The design as far as an export of responses shows it."""
    checks = frame["is_attention_check"].astype(bool)
    regular = frame[~checks]
    arms = sorted(set(regular["left_arm"].astype(str)) | set(regular["right_arm"].astype(str)))
    check_trials = frame.loc[checks, "trial"].nunique() if "trial" in frame.columns else 0
    return StudyDesign(
        arms=arms,
        questions=list(dict.fromkeys(regular["question"].astype(str))),
        prompts=int(regular["prompt"].nunique()),
        attention_checks=int(check_trials),
    )


def _list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}" if items else "none"


def exclusions_line(exclusions: Exclusions) -> str:
    """'N took part, k excluded (why), m analysed.'"""
    parts = [f"{exclusions.participants_total} took part"]
    why = []
    if exclusions.participants_excluded:
        why.append(f"{exclusions.participants_excluded} failed an attention check")
    idle = exclusions.participants_total - exclusions.participants_excluded - exclusions.participants_analysed
    if idle > 0:
        why.append(f"{idle} answered no study question")
    excluded = exclusions.participants_excluded + max(idle, 0)
    parts.append(f"{excluded} excluded ({'; '.join(why)})" if why else "0 excluded")
    parts.append(f"{exclusions.participants_analysed} analysed")
    line = ", ".join(parts) + "."
    if exclusions.participants_failed_attention and not exclusions.exclude_failed_attention:
        line += (
            f" {exclusions.participants_failed_attention} who failed an attention check were kept, as asked."
        )
    if exclusions.participants_unfinished:
        line += f" {exclusions.participants_unfinished} did not finish; their answers are kept."
    if exclusions.responses_same_arm:
        line += f" {exclusions.responses_same_arm} answers to trials showing one arm twice were left out."
    return line


def headline_test_reason(method: str) -> str:
    """Which test a headline row used and why, in words."""
    return TEST_REASONS.get(method, method)


def methods_paragraph(report: StudyReport, design: StudyDesign, names: DisplayNames) -> str:
    """The Methods paragraph: design, randomisation, participants, tests and why, multiplicity, software."""
    config = report.config
    arms = [names.arm(arm) for arm in design.arms]
    questions = [f"“{names.question(q)}”" for q in design.questions]
    pairs = len(design.arms) * (len(design.arms) - 1) // 2
    sentences = [
        f"Design. Participants compared images from {len(arms)} arms ({_list(arms)}) in blind pairs: for each "
        f"of {design.prompts} prompts, every pair of arms ({pairs} pair{'s' if pairs != 1 else ''}) was shown "
        f"side by side and {len(questions)} question{'s were' if len(questions) != 1 else ' was'} asked about "
        f"it ({_list(questions)}), each on a page of its own.",
        "Randomisation. Each participant saw the trials in an order shuffled from their own seed, and which arm "
        "appeared on the left was drawn per participant and trial so that each arm was on the left in half of "
        "its trials (counterbalanced, off by at most one); arm names were never shown.",
    ]
    if design.attention_checks:
        rule = (
            "participants who failed one were excluded from every analysis"
            if config.exclude_failed_attention
            else "participants who failed one were kept"
        )
        sentences.append(
            f"{design.attention_checks} instructed-response attention check{'s' if design.attention_checks > 1 else ''} "
            f"asked for a named side; {rule}."
        )
    sentences.append(f"Participants. {exclusions_line(report.exclusions)}")
    rows = [row for row in report.headline.rows if row.method]
    tests = []
    for method in dict.fromkeys(row.method for row in rows):
        cells = [
            f"{names.question(r.question)}: {names.pair(r.arm_a, r.arm_b)}"
            for r in rows
            if r.method == method
        ]
        tests.append(f"{headline_test_reason(method)} ({_list(cells)})")
    ties = (
        "“both” and “neither” counted as half a vote for each arm"
        if config.ties_as_half
        else "answers of “both” or “neither” were left out of the share"
    )
    if tests:
        sentences.append(
            "Analysis. The unit of analysis is the participant. For each question and pair of arms, the "
            f"headline tests whether the first arm's share of decisive votes differs from 50% ({ties}), with "
            f"{_list(tests)}; each share has a {config.confidence:.0%} confidence interval from the same test."
        )
        sentences.append(
            f"Multiplicity. The {len(rows)} headline test{'s form' if len(rows) != 1 else ' forms'} one "
            "confirmatory family, corrected by Holm's step-down method at α = .05; breakdowns per landmark and "
            "prompt and the position-bias check are exploratory and not corrected."
        )
    if len(design.arms) >= 3:
        sentences.append(
            "Arms were ranked per question by a Bradley–Terry model fitted by maximum likelihood, with "
            f"{config.confidence:.0%} intervals from {config.bootstrap} bootstrap resamples of participants "
            f"(seed {config.seed})."
        )
    sentences.append(
        design.plan.sentence()
        if design.plan
        else "The analysis plan was not preregistered (no plan was locked)."
    )
    software = ", ".join(
        f"{'Python' if name == 'python' else name} {version}" for name, version in design.software.items()
    )
    sentences.append(f"Software. peftlab; {software}.")
    return " ".join(sentences)


def _row_sentence(row: Headline, names: DisplayNames, confidence: float) -> str:
    """One headline row as a sentence: the preferred arm, share, interval, participants, test, p and Holm p."""
    question = names.question(row.question)
    if not row.votes or math.isnan(row.share_a):
        return f"On {question}, {names.pair(row.arm_a, row.arm_b)} received no decisive votes."
    winner, loser, share, low, high = row.arm_a, row.arm_b, row.share_a, row.ci_low, row.ci_high
    if share < 0.5:
        winner, loser, share, low, high = row.arm_b, row.arm_a, 1 - share, 1 - high, 1 - low
    numbers = (
        f"{percent(share, 1)} of decisive votes, {confidence:.0%} CI {interval(low, high, 1)}; "
        f"{row.participants} participants, {number(row.votes)} votes; {p_value(row.p_value)}, "
        f"Holm-adjusted {p_value(row.p_holm)}"
    )
    if row.p_holm < 0.05:
        sentence = f"On {question}, {names.arm(winner)} was preferred over {names.arm(loser)} ({numbers})."
    else:
        sentence = (
            f"On {question}, neither {names.arm(winner)} nor {names.arm(loser)} was clearly preferred "
            f"({names.arm(winner)}: {numbers})."
        )
    # The analysis's own warning (too few participants, a verdict one participant turns) stays with the row.
    return f"{sentence} {row_caution(row)}" if row.caution else sentence


def row_caution(row: Headline) -> str:
    """The row's caution without its label in arm keys (the sentence around it names the row)."""
    return row.caution.replace(f"Caution, {row.arm_a} vs {row.arm_b} for {row.question}:", "Caution:")


def headline_sentences(report: StudyReport, names: DisplayNames) -> list[str]:
    """One sentence per headline row, in display names."""
    return [_row_sentence(row, names, report.config.confidence) for row in report.headline.rows]


def results_paragraph(report: StudyReport, design: StudyDesign, names: DisplayNames) -> str:
    """The Results paragraph: who was analysed, each headline row, position bias and the leaderboard (with
    three or more arms the leaderboard comes first: the ranking answers the question, the pairs detail it)."""
    sentences = [exclusions_line(report.exclusions)]
    if not report.headline.rows:
        sentences.append("No decisive votes have been cast yet, so there is no headline result.")
    sentences += headline_sentences(report, names)
    overall = next((row for row in report.position_bias.rows if row.question == "all"), None)
    if overall is not None:
        sentences.append(
            f"Exploratory: the left image received {percent(overall.left_share, 1)} of decisive votes "
            f"({interval(overall.ci_low, overall.ci_high, 1)}, {p_value(overall.p_value)}), against 50% "
            "without position bias."
        )
    ranking = bradley_terry_sentences(report, names)
    if len(design.arms) >= 3:
        return " ".join([sentences[0], *ranking, *sentences[1:]])
    return " ".join(sentences + ranking)


def bradley_terry_sentences(report: StudyReport, names: DisplayNames) -> list[str]:
    """Per question, the arms in Bradley–Terry order with their strengths and intervals, or why not."""
    sentences = []
    for question in dict.fromkeys(row.question for row in report.bradley_terry.rows):
        rows = sorted(
            (row for row in report.bradley_terry.rows if row.question == question), key=lambda row: row.rank
        )
        if any(math.isnan(row.strength) for row in rows):
            sentences.append(f"No Bradley–Terry ranking on {names.question(question)}: {rows[0].status}.")
            continue
        ranked = " > ".join(
            f"{names.arm(row.arm)} ({number(row.strength, 3)}"
            + (f", [{number(row.ci_low, 3)}, {number(row.ci_high, 3)}]" if not math.isnan(row.ci_low) else "")
            + ")"
            for row in rows
        )
        sentences.append(f"Bradley–Terry strengths on {names.question(question)}: {ranked}.")
    return sentences
