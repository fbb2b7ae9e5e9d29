"""The statistics of a pairwise preference study (pure numpy/pandas/scipy/statsmodels, no Django).

responses: the columns of a response frame and reading exports; inference: participant-level tests of a
share; bradley_terry; agreement; planning; tables: rendering; report: `analyze_responses`, which puts them
together into a `StudyReport`; display: names and number formats for readers; paragraphs: the Methods and
Results text; preregistration: the locked analysis plan and its SHA-256.
"""

from analysis.stats.agreement import fleiss_kappa, krippendorff_alpha_nominal
from analysis.stats.bradley_terry import bradley_terry, not_estimable
from analysis.stats.inference import binomial_p_values, clustered_share_tests, holm_adjust, wilson_intervals
from analysis.stats.planning import SampleSizePlan, plan_from_report, plan_sample_size
from analysis.stats.report import ALL, AnalysisConfig, StudyReport, analyze_responses
from analysis.stats.responses import RESPONSE_COLUMNS, prepare_responses, read_responses
from analysis.stats.tables import ResultTable

__all__ = [
    "ALL",
    "RESPONSE_COLUMNS",
    "AnalysisConfig",
    "ResultTable",
    "SampleSizePlan",
    "StudyReport",
    "analyze_responses",
    "binomial_p_values",
    "bradley_terry",
    "clustered_share_tests",
    "fleiss_kappa",
    "holm_adjust",
    "krippendorff_alpha_nominal",
    "not_estimable",
    "plan_from_report",
    "plan_sample_size",
    "prepare_responses",
    "read_responses",
    "wilson_intervals",
]
