"""The test project's URLs without ``include("instant_signals.urls")``: a project that forgot it
(``/instant/get_token/`` answers 404)."""

from support.browser_pages import urlpatterns as _every_url

urlpatterns = [url for url in _every_url if str(url.pattern) != "instant/"]
