"""The web console ``tlrec serve`` shows at ``/``: one page, its static assets, and the data behind it.

The page (``templates/index.html``, ``static/``) is plain HTML, CSS and JavaScript (no build
step) that calls the same ``/v1`` routes as any client, with the API key the person types in
kept in the tab's session storage and sent in the ``X-API-Key`` header (never in a URL).
This package holds what those routes read besides the models: the catalog and its media
(``catalog``), users' event histories (``histories``), the experiments view (``experiments``)
and the model reports (``reports``); ``state.ConsoleState`` ties them to one app.
"""
