"""Secret values never reach a log, a record or stdout (SPEC §7).

A tool rarely prints a secret as it is: Terraform quotes it HCL-style
(``"pw-\\"x\\\\y"``), pytest shows its ``repr``, a URL carries it percent-encoded,
a config blob carries it in base64, a report XML- or HTML-escaped. The redactor masks
every one of those renderings, not only the raw value.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import re
from typing import Any, Iterable, Mapping, Pattern, Set
from urllib.parse import quote, quote_plus

MASK = "****"
# Values this short would mask ordinary words and numbers everywhere; no real
# credential is this short.
MIN_SECRET_LENGTH = 4
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


class Redactor:
    def __init__(self, values: Iterable[str] = ()) -> None:
        unique = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
        self.values = sorted(unique, key=len, reverse=True)
        forms = set().union(*(renderings(v) for v in unique)) if unique else set()
        # One pattern, longest first, so a secret containing another is masked whole
        # and a text is scanned once however many renderings there are.
        self._pattern: Pattern[str] | None = re.compile(
            "|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f)))) if forms else None

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
        return self._pattern.sub(MASK, text) if self._pattern is not None else text


def _python_escaped(value: str) -> Set[str]:
    """The inside of ``repr(value)`` in both of Python's quotings (pytest prints reprs)."""
    # repr picks double quotes when the value holds ' but no "; a value holding both
    # is quoted with ' and the ' escaped: appending both forces that form.
    return {repr(value)[1:-1], repr(value + "'\"")[1:-4]}


def _base64_fragments(data: bytes) -> Set[str]:
    """What ``data`` looks like inside any base64 text: it may start at any of three
    offsets in the 3-byte groups, so each alignment gives another string. Only the
    characters decided by ``data`` alone are kept (GitHub Actions masks the same way)."""
    fragments = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        first = (offset * 8 + 5) // 6  # characters still touched by the padding bytes
        last = (offset + len(data)) * 8 // 6  # characters wholly decided by ``data``
        core = encoded[first:last]
        fragments.update({core, core.replace("+", "-").replace("/", "_")})  # standard and URL-safe
    return fragments


def renderings(value: str) -> Set[str]:
    """Every form of ``value`` a tool is known to print, each at least MIN_SECRET_LENGTH long."""
    parts = [value, *(line for line in value.splitlines() if line.strip())]
    forms: Set[str] = set()
    for part in parts:
        json_ascii = json.dumps(part)[1:-1]
        json_text = json.dumps(part, ensure_ascii=False)[1:-1]
        # HCL (Terraform's plan and errors) escapes like JSON, and doubles the
        # template introducers ${ and %{.
        hcl = json_text.replace("${", "$${").replace("%{", "%%{")
        # JSON inside a string, escaped once more: `terraform output` shows a
        # jsonencode()d value as an HCL string, a record or log line quotes a JSON blob.
        nested = {json.dumps(form, ensure_ascii=False)[1:-1] for form in (json_ascii, json_text)}
        nested |= {form.replace("${", "$${").replace("%{", "%%{") for form in nested}
        escaped = {part, json_ascii, json_text, hcl, *nested, *_python_escaped(part)}
        urls = {quote(part, safe=""), quote(part), quote_plus(part)}
        urls |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), u) for u in urls}
        forms |= escaped | urls
        forms |= {html.escape(form, quote=q) for form in escaped for q in (True, False)}
        forms |= _base64_fragments(part.encode("utf-8"))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


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
