"""Secret values never reach a log, a record or stdout (SPEC §7)."""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

MASK = "****"
# Values this short would mask ordinary words and numbers everywhere; no real
# credential is this short.
MIN_SECRET_LENGTH = 4
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


class Redactor:
    def __init__(self, values: Iterable[str] = ()) -> None:
        unique = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is masked whole.
        self.values = sorted(unique, key=len, reverse=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], secret_names: Iterable[str] = ()) -> "Redactor":
        names = set(secret_names) | set(AWS_SECRET_VARIABLES)
        values = [environ[name] for name in names if environ.get(name)]
        values += [value for name, value in environ.items() if name.startswith("TF_VAR_")]
        return cls(values)

    def with_values(self, values: Iterable[str]) -> "Redactor":
        return Redactor([*self.values, *values])

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text


class RedactingFilter(logging.Filter):
    """Applies a Redactor to every log record's final message."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        return True
