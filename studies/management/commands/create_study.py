"""python manage.py create_study --from-generation RUN --arms base,lora,ti --questions reference

    --max-participants 40 --completion-code failed_attention=NOPAY1 --completion-code full=FULL01
"""

from django.urls import reverse

from generation.models import GenerationRun
from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from studies.models import Study
from studies.selectors import COMPLETION_OUTCOMES, study_completion
from studies.services import completion_codes_parse, study_create_from_generation


class Command(PeftlabCommand):
    help = "Create a blind pairwise study from a generation run: every prompt x every pair of arms."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from-generation", type=int, required=True, metavar="RUN_ID")
        parser.add_argument("--arms", help="Comma-separated arms to compare (default: all of the run's).")
        parser.add_argument(
            "--questions", default="reference", help="'reference' or a JSON file of questions."
        )
        parser.add_argument("--title", default="Which image do you prefer?", help="Shown to participants.")
        parser.add_argument("--slug", help="The URL name (default: from the title).")
        parser.add_argument("--attention-checks", type=int, default=2)
        parser.add_argument("--seed", type=int, help="Which seed's image per prompt (default: the first).")
        parser.add_argument("--target-participants", type=int, default=50)
        parser.add_argument("--completion-redirect-url", default="", help="e.g. Prolific's completion URL.")
        parser.add_argument(
            "--max-participants",
            type=int,
            help="Admit at most N participants, those in progress included; later arrivals see a 'full' page.",
        )
        outcomes = "/".join(COMPLETION_OUTCOMES)
        parser.add_argument(
            "--completion-code",
            action="append",
            default=[],
            metavar="OUTCOME=CODE",
            help=f"The code for one outcome ({outcomes}); repeat per outcome.",
        )
        parser.add_argument(
            "--completion-redirect",
            action="append",
            default=[],
            metavar="OUTCOME=URL",
            help="Where one outcome goes (default: --completion-redirect-url with cc=CODE); repeat per outcome.",
        )
        parser.add_argument("--open", action="store_true", help="Open the study at once (default: draft).")

    def handle(self, *args, **options) -> None:
        run = GenerationRun.objects.filter(pk=options["from_generation"]).first()
        if run is None:
            raise UserInputError(
                f"no generation run {options['from_generation']}; the console (/console/) lists the runs and their ids."
            )
        codes = completion_codes_parse(codes=options["completion_code"], redirects=options["completion_redirect"])
        study = study_create_from_generation(
            run=run,
            arms=[arm.strip() for arm in options["arms"].split(",") if arm.strip()]
            if options["arms"]
            else None,
            questions=options["questions"],
            title=options["title"],
            slug=options["slug"],
            attention_checks=options["attention_checks"],
            seed=options["seed"],
            target_participants=options["target_participants"],
            completion_redirect_url=options["completion_redirect_url"],
            status=Study.Status.OPEN if options["open"] else Study.Status.DRAFT,
            max_participants=options["max_participants"],
            completion_codes=codes,
        )
        trials = study.trials.filter(is_attention_check=False).count()
        checks = study.trials.count() - trials
        self.stdout.write(
            f"Created study {study.slug!r} ({study.status}): {trials} trials x {study.questions.count()} questions"
            f" + {checks} attention checks, arms {', '.join(study.arms)}."
        )
        cap = "no cap" if study.max_participants is None else f"at most {study.max_participants}"
        self.stdout.write(f"Participants: {cap} (in progress included).")
        for outcome in COMPLETION_OUTCOMES:
            completion = study_completion(study=study, outcome=outcome)
            shown = completion.redirect_url or completion.code or "no code (asked to return the task)"
            self.stdout.write(f"  {outcome:<17} {shown}")
        self.stdout.write(f"Participant URL: {reverse('studies:entry', args=[study.slug])}")
        self.stdout.write(f"Dashboard:       {reverse('studies:dashboard', args=[study.slug])}")
