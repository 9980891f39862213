"""Secret values never reach a log, a record or stdout (SPEC §7)."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

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
    def from_environ(cls, environ: Mapping[str, str], secret_names: Iterable[str] = (),
                     public: Iterable[str] = ()) -> "Redactor":
        """What envpipe prints is masked with this: `secrets:` values, AWS credentials
        and every TF_VAR_* value, except a TF_VAR_* value that is one of ``public``
        (the config's own names: masking ``test`` would corrupt every mention of the
        environment and protect nothing, the name is in envpipe.yml)."""
        public_values = set(public)
        values = [value for name, value in environ.items()
                  if name.startswith("TF_VAR_") and value not in public_values]
        return cls([*values, *cls.for_records(environ, secret_names).values])

    @classmethod
    def for_records(cls, environ: Mapping[str, str], secret_names: Iterable[str] = ()) -> "Redactor":
        """What records are masked with: `secrets:` values and AWS credentials only.

        Records are data read back later (outputs become ENVPIPE_OUTPUT_* of the test
        stage): masking every TF_VAR_* value there would corrupt ordinary values that
        merely equal one, and SPEC §6 asks only that secret values stay out of them.
        """
        names = set(secret_names) | set(AWS_SECRET_VARIABLES)
        return cls(environ[name] for name in names if environ.get(name))

    def with_values(self, values: Iterable[str]) -> "Redactor":
        return Redactor([*self.values, *values])

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text


def redact_data(value: Any, redactor: "Redactor") -> Any:
    """``value`` with every secret masked in its strings, at any depth (keys too)."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, Mapping):
        return {redact_data(k, redactor): redact_data(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, redactor) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Applies a Redactor to every log record's final message."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        return True
