"""The staff-only report page, its downloads and charts; closed to anonymous visitors and non-staff users."""

import io

import pandas as pd
import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db

URLS = ["/analysis/seed/", "/analysis/seed/responses.csv", "/analysis/seed/charts/preferences.png"]


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("researcher", password="x", is_staff=True))
    return client


@pytest.mark.parametrize("url", URLS)
def test_report_and_downloads_are_closed_to_anonymous_and_non_staff(answered_study, client, url):
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(get_user_model().objects.create_user("participant", password="x"))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_see_the_forest_plot_first_then_results_methods_and_readable_tables(
    answered_study, staff_client
):
    answered_study.arm_labels = {"lora": "LoRA (rank 8)", "ti": "Textual Inversion"}
    answered_study.save()
    answered_study.questions.filter(key="style").update(label="Style match")
    response = staff_client.get("/analysis/seed/")
    assert response.status_code == 200
    page = response.content.decode()
    body = page[page.index("<main>") :]
    # The forest plot is the first thing on the page after the title and downloads, embedded as SVG.
    assert body.index('id="forest-plot"') < body.index('id="results"') < body.index('id="methods"')
    assert body.index('id="forest-plot"') < body.index("<table")
    assert 'src="data:image/svg+xml;base64,' in body
    assert "12 took part, 2 excluded (2 failed an attention check), 10 analysed." in body
    assert "On Style match, neither LoRA (rank 8) nor Textual Inversion was clearly preferred" in body
    assert (
        "Holm" in body and "t test of participants&#x27; own shares" in body and "Not preregistered" in body
    )
    for raw in ("share_a", "p_holm", "design_effect", "participants_excluded"):
        assert raw not in body
    assert "First arm&#x27;s share" in body and "p (Holm)" in body and "80.0%" in body
    # Two arms: one line says why there is no Bradley-Terry leaderboard.
    assert "No Bradley-Terry leaderboard: it ranks three or more arms, and this study compares 2" in body
    # The empty Bradley-Terry figure is left out: the leaderboard's line says why there is none.
    assert "/analysis/seed/charts/bradley-terry.png" not in page
    for name in ("forest", "preferences", "landmarks", "position-bias"):
        assert f"/analysis/seed/charts/{name}.png?download=1" in page
        assert f"/analysis/seed/charts/{name}.svg?download=1" in page
    assert "/analysis/seed/responses.parquet" in page


def test_staff_download_charts_and_pseudonymous_exports(answered_study, staff_client):
    png = staff_client.get("/analysis/seed/charts/landmarks.png?download=1")
    assert png["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert "attachment" in png["Content-Disposition"]
    svg = staff_client.get("/analysis/seed/charts/preferences.svg")
    assert b"<svg" in svg.content
    csv = staff_client.get("/analysis/seed/responses.csv")
    frame = pd.read_csv(io.BytesIO(csv.content))
    assert len(frame) == 204 and "external_id" not in frame.columns
    parquet = staff_client.get("/analysis/seed/responses.parquet")
    assert len(pd.read_parquet(io.BytesIO(parquet.content))) == 204
    assert staff_client.get("/analysis/seed/responses.xlsx").status_code == 404
    assert staff_client.get("/analysis/nope/").status_code == 404
