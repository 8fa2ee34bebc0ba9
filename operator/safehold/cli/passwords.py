"""The password rule for new keys (``repo init``, ``repo key add``): docs/cli.md.

A key object is only as strong as its password: anyone who can read the bucket can
try passwords against it offline, each guess costing one key derivation (Argon2id, 64 MiB). So a new
key needs at least :data:`~safehold.repo.keys.MIN_PASSWORD_LENGTH` characters, unless
``--insecure-password`` says the user knows better (a test, a throw-away repository).
Passwords of existing keys are never checked: opening a repository keeps working.
"""

from __future__ import annotations

from argparse import ArgumentParser, Namespace

from safehold.cli.context import UsageError

__all__ = ["add_password_option", "check_new_password"]


def add_password_option(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-password",
        action="store_true",
        help="accept a new password shorter than 12 characters",
    )


def check_new_password(args: Namespace, password: str, what: str = "password") -> None:
    """:class:`UsageError` (exit code 2) naming the rule when ``password`` is too weak
    for a new key and ``--insecure-password`` was not given."""
    from safehold.repo.keys import password_problem  # the crypto, only when a key is made

    problem = password_problem(password)
    if problem and not getattr(args, "insecure_password", False):
        raise UsageError(
            f"refusing the new {what}: {problem} "
            "(a passphrase of a few words is fine); pass --insecure-password to use it anyway"
        )
