"""What every stage works with: the config, the repository, the CI context."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

from envpipe_agent import aws_credentials
from envpipe_agent.ci_context import CIContext, detect, render_version
from envpipe_agent.config import Config, Environment, check_version_template, load_config, validate_version
from envpipe_agent.errors import ConfigError, UsageError
from envpipe_agent.instances import resolve
from envpipe_agent.records import ACTIONS, RecordWriter
from envpipe_agent.redact import MIN_SECRET_LENGTH, Redactor
from envpipe_agent.repository import Repository, open_repository

# Overrides envpipe.yml's `version` template for one run (the generated GoCD pipelines set it).
VERSION_TEMPLATE_VARIABLE = "ENVPIPE_VERSION_TEMPLATE"


@dataclass(frozen=True)
class StageContext:
    config: Config
    repository: Repository
    ci: CIContext
    environ: Mapping[str, str]
    redactor: Redactor  # for everything printed (SPEC §7)
    # For records (SPEC §6): secrets and AWS credentials, not every TF_VAR_* value.
    # Required, with no default: a context cannot write a record unredacted.
    record_redactor: Redactor
    lock_timeout: float = 0.0
    # Every AWS client (the S3 repository, STS, CloudFormation) is made by this.
    client_factory: aws_credentials.ClientFactory = aws_credentials.client

    @classmethod
    def load(
        cls,
        config_path: Union[str, Path] = "envpipe.yml",
        repository: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
        lock_timeout: float = 0.0,
        client_factory: Optional[aws_credentials.ClientFactory] = None,
    ) -> "StageContext":
        """Load envpipe.yml and open its repository (``repository`` or ENVPIPE_REPO override it).

        ``client_factory`` makes every AWS client (default ``aws_credentials.client``)."""
        environ = dict(os.environ) if environ is None else environ
        config = load_config(Path(config_path))
        if environ.get(VERSION_TEMPLATE_VARIABLE):
            # Set by GoCD pipelines of the path, whose label is the version they deploy
            # ({label}): their own counter is not the publishing build's.
            config = replace(config, version=check_version_template(environ[VERSION_TEMPLATE_VARIABLE],
                                                                   VERSION_TEMPLATE_VARIABLE))
        _refuse_short_secrets(config, environ)
        url = repository or environ.get("ENVPIPE_REPO") or config.repository
        if not url:
            raise UsageError(
                f"{config.path}: no repository: set 'repository' (s3://bucket[/prefix] or a folder), "
                "ENVPIPE_REPO or --repo"
            )
        client_factory = client_factory or aws_credentials.client
        return cls(
            config=config,
            repository=open_repository(url, environ, client_factory, kms_key_id=(
                config.repository_encryption.kms_key_id if config.repository_encryption else None)),
            ci=detect(environ),
            environ=environ,
            redactor=Redactor.from_environ(environ, config.secrets, public=_public_names(config)),
            lock_timeout=lock_timeout,
            record_redactor=Redactor.for_records(environ, config.secrets),
            client_factory=client_factory,
        )

    @property
    def records(self) -> RecordWriter:
        """Writes this context's records, redacted with ``record_redactor``."""
        return RecordWriter(self.repository, self.ci, self.record_redactor)

    def environment(self, name: str) -> Environment:
        """The path environment or the on-demand instance called ``name`` (SPEC §9):
        every stage that takes an environment takes an instance the same way."""
        return resolve(self.config, self.repository, name)

    def credentials(self, environment: Environment) -> aws_credentials.Credentials:
        """The credentials ``environment``'s stages run with (role assumed, account checked)."""
        return aws_credentials.environment_credentials(environment, self.environ, self.ci, self.client_factory)

    def repository_as(self, credentials: aws_credentials.Credentials) -> Repository:
        """The repository reached with ``credentials``: an assumed role's own access for
        what a tool writes there (CloudFormation's large templates), else ours."""
        if not credentials.role_arn:
            return self.repository
        return open_repository(self.repository.url, credentials.environ, self.client_factory)

    def resolve_version(self, version: Optional[str], how: str = "pass --version VERSION") -> str:
        """``version`` if given, else the current CI build's version (SPEC §5).

        ``how`` tells the user how this command takes a version, should none be derivable."""
        if version:
            return validate_version(version)
        return render_version(self.config.version, self.ci, how)


def _refuse_short_secrets(config: Config, environ: Mapping[str, str]) -> None:
    """A secret too short to mask would be printed as it is (masking it would mask
    ordinary words and numbers everywhere): refuse it before anything runs."""
    for name in config.secrets:
        value = environ.get(name)
        if value and len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{config.path}: secrets: {name} is {len(value)} characters long; envpipe can mask only secrets "
                f"of {MIN_SECRET_LENGTH} characters or more: give it a longer value, or remove it from "
                "'secrets' if it is no secret"
            )


def _public_names(config: Config) -> Tuple[str, ...]:
    """Names envpipe prints as identifiers, public in envpipe.yml itself: a TF_VAR_*
    value equal to one is not masked, or `--json` would say "environment": "****"."""
    return (*config.environment_names, config.project, config.tool, *ACTIONS)
