"""Generation's pages."""

app_name = "generation"
urlpatterns: list = []
