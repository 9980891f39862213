"""The one exception hierarchy: each class carries its exit code (SPEC §4).

Library code raises these and never exits; ``main.ErrorHandler`` is the one place
that turns them (and interrupts, and bugs) into an exit code and a single stderr line.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI server aborting the build), raised like Ctrl-C: every ``except
    KeyboardInterrupt`` and ``finally`` runs for it too, so children are stopped,
    locks released and "interrupted" records written. Exit code 130."""


class EnvpipeError(Exception):
    """An expected failure: the message is the one line the user sees."""

    exit_code = EXIT_INTERNAL

    def reworded(self, message: str) -> "EnvpipeError":
        """This error (same class, exit code and attributes) saying ``message`` instead:
        to name where it happened, or to mask a value. Made without calling the class,
        whose constructor may take other arguments than a message."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.args = (message,)
        return copy


class UsageError(EnvpipeError):
    """Bad arguments or a missing precondition the user must supply; nothing changed."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """envpipe.yml is missing, unreadable or invalid."""


class NotFound(UsageError):
    """A version, environment folder or record the command needs does not exist."""


class StageFailed(EnvpipeError):
    """The stage ran and failed: the tool errored or the tests failed."""

    exit_code = EXIT_FAILED


class Refused(EnvpipeError):
    """A guard refused to go on (SPEC §4 exit 3)."""

    exit_code = EXIT_REFUSED


class VersionConflict(Refused):
    """The version is already published with other content."""


class VersionMismatch(Refused):
    """The environment holds another version than the one the command was given."""


class IntegrityError(Refused):
    """Files do not match their manifest."""


class UnsafePath(Refused):
    """A key or path would land outside its folder."""


class UnsafeSource(Refused):
    """The definition holds secrets or state that must never be published."""


class GateNotPassed(Refused):
    """The version has not passed its tests in the previous environment."""


class ApprovalRequired(Refused):
    """An ``approval: manual`` environment is changed without an approver."""


class PolicyHold(Refused):
    """A freeze, an unfinished soak or a closed promotion window (SPEC §10)."""


class LockHeld(Refused):
    """Another holder has the environment's lock."""


class LockLost(Refused):
    """This run's environment lock was broken or ran out while it worked."""


class AccountMismatch(Refused):
    """The credentials are for another AWS account than the environment's."""


class RepositoryError(EnvpipeError):
    """The artefact repository could not be reached or answered with an error."""

    exit_code = EXIT_FAILED
