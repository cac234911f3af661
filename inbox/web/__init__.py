"""The agent inbox over HTTP: an aiohttp application with the JSON API under /api/.

`create_app` builds it; pages and webhook routes are added to the same route table
(`inbox.web.routes.add_routes`), so authentication, CSRF and the OpenAPI document cover them
too.
"""

from inbox.web.factory import create_app as create_app
