"""API authentication: DRF tokens sent as `Authorization: Bearer <token>`.

`python manage.py asm_token <username>` creates (or prints) a user's token. The admin's
login session also authenticates the API and WebSockets (the operator console uses it).
"""

from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"
