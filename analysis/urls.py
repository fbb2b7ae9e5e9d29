"""Analysis's pages."""

app_name = "analysis"
urlpatterns: list = []
