"""Prompt sets: the built-in landmark set, and users' JSON/CSV files refused with the line and field at fault."""

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from generation.models import PromptSet
from generation.services import prompt_set_install_builtin, prompt_set_load

pytestmark = pytest.mark.django_db


def test_builtin_set_has_the_five_landmarks_and_installs_idempotently():
    first = prompt_set_install_builtin()
    second = prompt_set_install_builtin()
    assert first.pk == second.pk and first.builtin
    assert set(first.prompts.values_list("landmark", flat=True)) == {
        "Big Ben",
        "Colosseum",
        "Petra",
        "Sydney Opera House",
        "Bab-e-Khyber",
    }
    assert first.prompts.count() == 10
    assert PromptSet.objects.count() == 1


def test_load_prompts_reads_json_with_templates(tmp_path: Path, capsys):
    path = tmp_path / "bridges.json"
    path.write_text(
        json.dumps(
            {
                "description": "two bridges",
                "prompts": [
                    {"landmark": "Golden Gate", "text": "the golden gate bridge in fog"},
                    {
                        "landmark": "Tower Bridge",
                        "text": "tower bridge at night",
                        "negative_prompt": "blurry",
                        "arm_templates": {"ti": "{prompt} in the style of {token}"},
                    },
                ],
            }
        )
    )
    call_command("load_prompts", str(path))
    prompt_set = PromptSet.objects.get(name="bridges")
    assert [prompt.landmark for prompt in prompt_set.prompts.all()] == ["Golden Gate", "Tower Bridge"]
    assert prompt_set.prompts.last().arm_templates == {"ti": "{prompt} in the style of {token}"}
    assert "Prompt set 'bridges': 2 prompts, 2 landmarks." in capsys.readouterr().out


def test_load_prompts_reads_csv(tmp_path: Path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "landmark,text,negative_prompt,template_ti\n"
        "Eiffel Tower,the eiffel tower at dawn,,\n"
        'Taj Mahal,"the taj mahal, reflected in water",blurry,"{token} art of {prompt}"\n'
    )
    prompt_set = prompt_set_load(path=path, name="My Set")
    assert prompt_set.name == "my-set"
    taj = prompt_set.prompts.get(landmark="Taj Mahal")
    assert (taj.text, taj.negative_prompt, taj.arm_templates) == (
        "the taj mahal, reflected in water",
        "blurry",
        {"ti": "{token} art of {prompt}"},
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.csv",
            "landmark,text\nBig Ben,a tower\nColosseum,\n",
            "bad.csv line 3: field 'text' is missing or empty.",
        ),
        ("bad.csv", "landmark,prompt\nBig Ben,a tower\n", "bad.csv line 1: the header has no 'text' column."),
        (
            "bad.csv",
            "landmark,text,template_TI\nPetra,the treasury,{prompt} only\n",
            "bad.csv line 2: field 'arm_templates': arm name 'TI' must be 1-30 lower-case letters",
        ),
        (
            "bad.json",
            '{"prompts": [\n  {"landmark": "A", "text": "x"},\n  {"landmark": "B"}\n]}',
            "bad.json line 3 (prompt 2): field 'text' is missing or empty.",
        ),
        (
            "bad.json",
            '[\n {"landmark": "A", "text": "x", "promt": "y"}\n]',
            "bad.json line 2 (prompt 1): field 'promt' is unknown",
        ),
        (
            "bad.json",
            '{"prompts": [\n  {"landmark": "A", "text": "x"},\n]}',
            "bad.json line 3: not valid JSON",
        ),
        ("bad.txt", "anything", "bad.txt: prompt files must end in .json or .csv."),
    ],
)
def test_load_prompts_rejects_malformed_files_with_line_and_field(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CommandError) as raised:
        call_command("load_prompts", str(path))
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert not PromptSet.objects.exists()


def test_load_prompts_refuses_an_existing_name(tmp_path: Path):
    path = tmp_path / "set.csv"
    path.write_text("landmark,text\nPetra,the treasury\n")
    prompt_set_load(path=path)
    with pytest.raises(CommandError, match="a prompt set named 'set' already exists; choose another --name."):
        call_command("load_prompts", str(path))
