"""`manage.py asm_token <username> [--create-user]`: print the user's API token.

The token is created when the user has none (DRF's authtoken); with `--create-user` the
user is created too (with an unusable password: the token is how it signs in to the API).
Use it as `Authorization: Bearer <token>` (docs/api.md). A new token is audited
(`token.create`, sessions.audit).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from sessions.audit import audit_record


class Command(BaseCommand):
    help = "Print a user's API token (created if missing); --create-user creates the user too."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="create the user (unusable password) if it does not exist",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        users = get_user_model()
        with transaction.atomic():
            user = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
            if user is None:
                if not options["create_user"]:
                    raise CommandError(
                        f"No user {username!r}; pass --create-user to create it "
                        f"(or use `manage.py createsuperuser`)."
                    )
                user = users.objects.create_user(**{users.USERNAME_FIELD: username})
                user.set_unusable_password()
                user.save(update_fields=["password"])
            token, created = Token.objects.get_or_create(user=user)
            if created:
                audit_record(
                    action="token.create",
                    actor="command:asm_token",
                    object_type="user",
                    object_id=user.pk,
                    detail={"username": username, "user_created": bool(options["create_user"])},
                )
        self.stdout.write(token.key)
