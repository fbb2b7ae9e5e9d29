"""Studies's pages."""

app_name = "studies"
urlpatterns: list = []
