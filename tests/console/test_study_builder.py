"""The console builds, edits, opens and closes a study, uploads prompt sets, and escapes its help texts."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from generation.models import GeneratedImage, GenerationRun, PromptSet
from studies.models import Study
from studies.services import study_create_from_generation


def build_data(**changes) -> dict:
    """A complete study-builder POST over the `run` fixture's three arms."""
    data = {
        "title": "Which picture?",
        "slug": "built",
        "arms": ["base", "lora", "ti"],
        "arm_label_base": "Base model",
        "arm_label_lora": "LoRA (rank 8)",
        "arm_label_ti": "",
        "questions": ["artwork", "style"],
        "question_label_artwork": "Would buy",
        "question_label_style": "Style match",
        "question_label_identity": "Identity",
        "custom_1_text": "Which image looks more like a real photograph?",
        "custom_1_key": "realism",
        "custom_1_label": "Realism",
        "custom_1_options": ["neither"],
        "custom_2_text": "",
        "custom_3_text": "",
        "attention_checks": 3,
        "target_participants": 40,
        "max_participants": 45,
        "completion_code": "DONE42",
        "completion_redirect_url": "https://app.prolific.com/submissions/complete",
        "code_failed_attention": "FAILED1",
        "redirect_failed_attention": "",
        "code_full": "",
        "redirect_full": "https://example.org/full",
    }
    return data | changes


def builder_url(run_pk: int) -> str:
    return f"{reverse('console:study_new')}?generation_run={run_pk}"


def test_the_builder_creates_the_study_it_was_given(staff_client, run):
    response = staff_client.post(builder_url(run.pk), build_data())
    assert response.status_code == 302, response.content.decode()
    study = Study.objects.get(slug="built")
    assert response["Location"] == reverse("console:study_detail", args=["built"])
    assert study.status == Study.Status.DRAFT and study.arms == ["base", "lora", "ti"]
    assert study.arm_labels == {"base": "Base model", "lora": "LoRA (rank 8)"}
    questions = list(study.questions.values_list("key", "label", "options", "show_references"))
    assert questions == [
        ("artwork", "Would buy", [], False),
        ("style", "Style match", [], True),
        ("realism", "Realism", ["neither"], False),
    ]
    assert study.trials.filter(is_attention_check=False).count() == 2 * 3  # prompts x arm pairs
    assert study.trials.filter(is_attention_check=True).count() == 3
    assert (study.target_participants, study.max_participants) == (40, 45)
    assert study.completion_code == "DONE42"
    assert study.completion_redirect_url == "https://app.prolific.com/submissions/complete"
    assert study.completion_codes == {
        "failed_attention": {"code": "FAILED1"},
        "full": {"redirect_url": "https://example.org/full"},
    }
    page = staff_client.get(response["Location"]).content.decode()
    assert "lora “LoRA (rank 8)”" in page and "Preview as a participant" in page


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arms": ["lora"]}, "Tick two or more arms"),
        ({"custom_1_key": ""}, "Give the custom question a key"),
        ({"questions": [], "custom_1_text": ""}, "Ask at least one question"),
        ({"custom_1_key": "style"}, "Question keys must differ"),
        ({"arm_label_base": "x" * 101}, "at most 100 characters"),
        (
            {"completion_code": "DONE 42!"},
            "completion code &#x27;DONE 42!&#x27; for finished: use up to 50 letters",
        ),
    ],
)
def test_the_builder_refuses_an_incomplete_study(staff_client, run, changes, message):
    page = staff_client.post(builder_url(run.pk), build_data(**changes)).content.decode()
    assert message in page
    assert not Study.objects.exists()


def test_a_run_still_rendering_is_listed_as_such_and_refused(staff_client, run):
    rendering = GenerationRun.objects.create(
        status=GenerationRun.Status.RUNNING,
        prompt_set=run.prompt_set,
        arms=["base", "lora"],
        config={"seeds": [1, 2]},
    )
    image = run.images.first()
    GeneratedImage.objects.create(
        run=rendering, arm="base", prompt=image.prompt, seed=1, image=image.image.name, sha256="1" * 64
    )
    listing = staff_client.get(reverse("console:study_new")).content.decode()
    assert f"Generation {rendering.pk} (arms base, lora) — still rendering (1 of 8 images)" in listing
    page = staff_client.get(builder_url(rendering.pk)).content.decode()
    assert f"run {rendering.pk} is still rendering (1 of 8 images)" in page
    assert "Create the study" not in page
    with pytest.raises(CommandError, match=rf"run {rendering.pk} is still rendering \(1 of 8 images\)"):
        call_command("create_study", "--from-generation", rendering.pk)
    assert not Study.objects.exists()


def test_settings_and_status_change_from_the_study_page(staff_client, run):
    study = study_create_from_generation(run=run, slug="s1")
    url = reverse("console:study_detail", args=["s1"])
    settings = {
        "title": "New title",
        "consent_text": "You may stop at any time.",
        "instructions": "Pick the image you prefer.",
        "target_participants": 30,
        "max_participants": "",
        "completion_code": "C0DE",
        "completion_redirect_url": "",
        "code_declined": "NOCONSENT",
        "arm_label_lora": "LoRA",
        "question_label_identity": "Landmark identity",
    }
    assert staff_client.post(url, settings).status_code == 302
    study.refresh_from_db()
    assert (study.title, study.max_participants, study.completion_code) == ("New title", None, "C0DE")
    assert (study.consent_text, study.instructions) == (
        "You may stop at any time.",
        "Pick the image you prefer.",
    )
    assert study.arm_labels == {"lora": "LoRA"}
    assert study.completion_codes == {"declined": {"code": "NOCONSENT"}}
    assert study.questions.get(key="identity").label == "Landmark identity"
    status_url = reverse("console:study_status", args=["s1"])
    for status in ("open", "closed", "draft"):
        staff_client.post(status_url, {"status": status})
        study.refresh_from_db()
        assert study.status == status


def test_a_study_without_trials_is_not_opened(staff_client, run):
    study = study_create_from_generation(run=run, slug="s2")
    study.trials.all().delete()
    page = staff_client.post(reverse("console:study_status", args=["s2"]), {"status": "open"}, follow=True)
    assert "has no trials or no questions" in page.content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


def png_upload(name: str, color=(10, 120, 30)) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def test_a_prompt_set_is_uploaded_with_its_reference_images(staff_client, media_root):
    prompts = {
        "name": "my-landmarks",
        "prompts": [
            {
                "landmark": "Eiffel Tower",
                "text": "the Eiffel Tower at dusk",
                "reference_images": ["refs/eiffel1.jpg"],
            },
            {"landmark": "Big Ben", "text": "Big Ben in rain", "reference_images": ["ben1.jpg", "ben2.jpg"]},
        ],
    }
    files = {
        "file": SimpleUploadedFile("set.json", json.dumps(prompts).encode()),
        "reference_images": [png_upload("eiffel1.jpg"), png_upload("ben1.jpg"), png_upload("ben2.jpg")],
    }
    response = staff_client.post(reverse("console:prompt_sets"), files)
    prompt_set = PromptSet.objects.get(name="my-landmarks")
    assert response["Location"] == f"{reverse('console:generation_new')}?prompt_set={prompt_set.pk}"
    references = [prompt.reference_images for prompt in prompt_set.prompts.all()]
    assert [len(names) for names in references] == [1, 2]
    for name in sum(references, []):
        assert name.startswith("references/") and default_storage.open(name).read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_csv_prompt_set_names_its_references_with_semicolons(staff_client, media_root):
    csv_text = "landmark,text,reference_images\nEiffel Tower,the tower,a.png; b.png\n"
    files = {
        "file": SimpleUploadedFile("towers.csv", csv_text.encode()),
        "reference_images": [png_upload("a.png"), png_upload("b.png")],
    }
    staff_client.post(reverse("console:prompt_sets"), files)
    assert len(PromptSet.objects.get(name="towers").prompts.get().reference_images) == 2


@pytest.mark.parametrize(
    ("references", "message"),
    [
        (["eiffel1.jpg"], "reference image &#x27;ben1.jpg&#x27; was not uploaded"),
        (
            ["eiffel1.jpg", "ben1.jpg", "other.jpg"],
            "reference image &#x27;other.jpg&#x27; is named by no prompt",
        ),
    ],
)
def test_an_upload_with_unmatched_references_writes_nothing(staff_client, media_root, references, message):
    prompts = [
        {"landmark": "Eiffel Tower", "text": "the tower", "reference_images": ["eiffel1.jpg"]},
        {"landmark": "Big Ben", "text": "Big Ben", "reference_images": ["ben1.jpg"]},
    ]
    files = {
        "file": SimpleUploadedFile("set.json", json.dumps(prompts).encode()),
        "reference_images": [png_upload(name) for name in references],
    }
    page = staff_client.post(reverse("console:prompt_sets"), files).content.decode()
    assert message in page
    assert not PromptSet.objects.exists()
    assert not (media_root / "references").exists()


def test_a_broken_reference_image_is_refused_before_anything_is_written(staff_client, media_root):
    files = {
        "file": SimpleUploadedFile(
            "set.json", b'[{"landmark": "A", "text": "a", "reference_images": ["a.png"]}]'
        ),
        "reference_images": [SimpleUploadedFile("a.png", b"not an image")],
    }
    page = staff_client.post(reverse("console:prompt_sets"), files).content.decode()
    assert "is not a readable image" in page
    assert not PromptSet.objects.exists() and not (media_root / "references").exists()


def test_the_builtin_set_is_added_from_the_console(staff_client):
    staff_client.post(reverse("console:prompt_set_builtin"))
    assert PromptSet.objects.get(builtin=True).prompts.exists()
    page = staff_client.get(reverse("console:generation_new")).content.decode()
    assert "landmarks</option>" in page


def test_help_texts_show_their_angle_brackets(staff_client, run):
    training = staff_client.get(reverse("console:training_new")).content.decode()
    assert "e.g. &quot;&lt;ghibli&gt;&quot;" in training
    builder = staff_client.get(builder_url(run.pk)).content.decode()
    assert "/studies/&lt;slug&gt;/" in builder and "cc=&lt;code&gt; is appended" in builder
    study = study_create_from_generation(run=run, slug="helped")
    get_user_model().objects.filter(username="researcher").update(is_superuser=True)
    admin = staff_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "The entry URL is /studies/&lt;slug&gt;/." in admin


def test_a_locked_plan_keeps_its_planned_participants(staff_client, run):
    study = study_create_from_generation(run=run, slug="locked", target_participants=40)
    Study.objects.filter(pk=study.pk).update(plan={}, plan_sha256="a" * 64, plan_locked_at=timezone.now())
    url = reverse("console:study_detail", args=["locked"])
    settings = {"title": "t", "consent_text": "c", "instructions": "i", "target_participants": 60}
    page = staff_client.post(url, settings).content.decode()
    assert "has a locked analysis plan" in page and "the target participants (40 -&gt; 60)" in page
    study.refresh_from_db()
    assert (study.target_participants, study.title) == (40, "Which image do you prefer?")
    assert staff_client.post(url, settings | {"target_participants": 40}).status_code == 302
    study.refresh_from_db()
    assert study.title == "t"
    # Insisting with a reason: the change is made and recorded as a deviation.
    reason = "recruitment slower than planned"
    assert staff_client.post(url, settings | {"deviation_reason": reason}).status_code == 302
    study.refresh_from_db()
    assert study.target_participants == 60
    assert [(d["change"], d["reason"]) for d in study.plan_deviations] == [
        ("the target participants (40 -> 60)", reason)
    ]


def test_the_study_page_locks_the_analysis_plan_and_shows_its_hash(staff_client, run):
    study_create_from_generation(run=run, slug="prereg")
    url = reverse("console:study_detail", args=["prereg"])
    assert 'id="lock-plan"' in staff_client.get(url).content.decode()
    response = staff_client.post(reverse("analysis:lock_plan", args=["prereg"]), {"next": url})
    assert response.status_code == 302 and response.url == url
    study = Study.objects.get(slug="prereg")
    assert study.plan_locked_at is not None and len(study.plan_sha256) == 64
    page = staff_client.get(url).content.decode()
    assert study.plan_sha256 in page and "no deviations" in page and 'id="lock-plan"' not in page
    # An address elsewhere is not followed: back to the dashboard.
    assert staff_client.post(
        reverse("analysis:lock_plan", args=["prereg"]), {"next": "https://evil.example/"}
    ).url == reverse("studies:dashboard", args=["prereg"])
