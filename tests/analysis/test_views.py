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


def test_staff_see_tables_charts_and_download_links(answered_study, staff_client):
    response = staff_client.get("/analysis/seed/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.index("Headline") < page.index("participants_excluded")
    assert "lora not clearly preferred over ti for style: 80%" in page
    for text in (
        "Exploratory: preference per landmark",
        "position bias",
        "Inter-rater agreement",
        "participants_excluded",
    ):
        assert text in page
    for name in ("preferences", "landmarks", "position-bias", "bradley-terry"):
        assert f"/analysis/seed/charts/{name}.svg" in page
        assert f"/analysis/seed/charts/{name}.png?download=1" in page
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
