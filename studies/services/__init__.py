"""Studies' writes, by concern: `setup` (stimuli, studies, questions, trials), `stimuli` (the check before a
study opens) and `participants` (the walk).

Import from here (`from studies.services import study_create_from_generation`): the names below are the
package's public writes.
"""

from studies.services.participants import (
    CLIENT_MS_MAX,
    FEEDBACK_MAX_CHARS,
    MTURK_PREVIEW_ASSIGNMENT,
    ExternalIds,
    Page,
    StudyFull,
    StudyStopped,
    feedback_normalize,
    participant_answer_all,
    participant_find,
    participant_finish,
    participant_instructions_read,
    participant_page_shown,
    participant_pages,
    participant_preview,
    participant_start,
    response_record,
)
from studies.services.preregistration import study_plan_guard, study_plan_store
from studies.services.setup import (
    DEFAULT_CONSENT,
    DEFAULT_INSTRUCTIONS,
    REFERENCE_QUESTIONS,
    arm_labels_clean,
    arms_validate,
    completion_codes_parse,
    completion_codes_validate,
    generation_run_ready_check,
    questions_load,
    stimuli_import,
    study_contents_build,
    study_create_from_generation,
    study_settings_update,
    study_status_set,
    study_trials_build,
)
from studies.services.stimuli import study_stimuli_check

__all__ = [
    "DEFAULT_CONSENT",
    "DEFAULT_INSTRUCTIONS",
    "CLIENT_MS_MAX",
    "FEEDBACK_MAX_CHARS",
    "MTURK_PREVIEW_ASSIGNMENT",
    "REFERENCE_QUESTIONS",
    "ExternalIds",
    "Page",
    "StudyFull",
    "StudyStopped",
    "arm_labels_clean",
    "arms_validate",
    "completion_codes_parse",
    "completion_codes_validate",
    "feedback_normalize",
    "generation_run_ready_check",
    "participant_answer_all",
    "participant_find",
    "participant_finish",
    "participant_instructions_read",
    "participant_page_shown",
    "participant_pages",
    "participant_preview",
    "participant_start",
    "questions_load",
    "response_record",
    "stimuli_import",
    "study_contents_build",
    "study_create_from_generation",
    "study_plan_guard",
    "study_plan_store",
    "study_settings_update",
    "study_status_set",
    "study_stimuli_check",
    "study_trials_build",
]
