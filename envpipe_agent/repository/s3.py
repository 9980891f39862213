"""An S3 bucket (or a prefix in one) as the artefact repository, through boto3.

The client comes from ``aws_credentials.client`` (or the ``client_factory`` given):
endpoint, credentials and region from the environment mapping the repository is
opened with, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` included; retries are
botocore's standard mode.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Optional, Sequence
from urllib.parse import quote

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from envpipe_agent import aws_credentials
from envpipe_agent.errors import RepositoryError, UsageError
from envpipe_agent.paths import check_relative_path
from envpipe_agent.repository.base import (
    MULTIPART_SIZE,
    TRANSFER_THREADS,
    AlreadyExists,
    KeyNotFound,
    ObjectInfo,
)

# Files above this go through s3transfer's multipart upload: streamed in 16 MiB
# parts, a few at a time, so memory stays flat whatever the file size.
MULTIPART_THRESHOLD = MULTIPART_SIZE
COPY_OBJECT_LIMIT = 5 * 1024 ** 3  # CopyObject's own limit; larger goes multipart
LARGE_TRANSFER = TransferConfig(
    multipart_threshold=MULTIPART_THRESHOLD,
    multipart_chunksize=MULTIPART_THRESHOLD,
    max_concurrency=4,
)
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Repository:
    def __init__(self, client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str],
                 client_factory: Optional[aws_credentials.ClientFactory] = None) -> "S3Repository":
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise UsageError(f"repository {url!r}: no bucket name; use s3://bucket[/prefix]")
        client = (client_factory or aws_credentials.client)(
            "s3", environ,
            config=Config(retries={"mode": "standard", "max_attempts": 5},
                          max_pool_connections=TRANSFER_THREADS + 8),
        )
        return cls(client, bucket, prefix)

    def _key(self, key: str) -> str:
        return self.prefix + check_relative_path(key, self.url)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str = ""):
        """Turn botocore's exceptions into one clear line."""
        where = f"s3://{self.bucket}/{self.prefix}{key}"
        try:
            yield
        except NoCredentialsError:
            raise UsageError(
                f"cannot {action} {where}: no AWS credentials found; set them the usual way "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role)"
            ) from None
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise KeyNotFound(key) from None
            if code == "NoSuchBucket":
                raise UsageError(
                    f"bucket {self.bucket!r} does not exist: create it or fix 'repository' in envpipe.yml"
                ) from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise RepositoryError(
                    f"cannot {action} {where}: access denied ({code}); check the agent's AWS permissions"
                ) from None
            message = exc.response.get("Error", {}).get("Message", "")
            raise RepositoryError(f"cannot {action} {where}: {code} {message}".rstrip()) from None
        except BotoCoreError as exc:
            raise RepositoryError(f"cannot {action} {where}: {exc}") from None

    def list(self, prefix: str, start_after: Optional[str] = None) -> Iterator[ObjectInfo]:
        arguments = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            arguments["StartAfter"] = self.prefix + start_after
        with self._errors("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"][len(self.prefix):],
                        size=item["Size"],
                        etag=item["ETag"].strip('"'),
                    )

    def read(self, key: str) -> bytes:
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def open(self, key: str) -> BinaryIO:
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        arguments = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_absent:
            arguments["IfNoneMatch"] = "*"
        with self._errors("write", key):
            try:
                response = self.client.put_object(**arguments)
            except ClientError as exc:
                if if_absent and _error_code(exc) in _CONDITION_FAILED:
                    tag = self._own_earlier_write(exc, key, data)
                    if tag is None:
                        raise AlreadyExists(key) from None
                    return tag
                raise
        return response["ETag"].strip('"')

    def _own_earlier_write(self, exc: ClientError, key: str, data: bytes) -> Optional[str]:
        """After a retried conditional create failed: the stored object's tag if it is
        byte for byte what we sent, else None.

        When the first PUT reached S3 but its answer was lost (a reset, a timeout),
        botocore sends it again and S3 answers 412: the object that is "already there"
        is our own. Every conditional create envpipe makes (lock, claim, manifest,
        record) carries an id or a time stamp, so equal bytes mean the same write.
        """
        if not exc.response.get("ResponseMetadata", {}).get("RetryAttempts"):
            return None  # answered at the first attempt: genuinely someone else's
        try:
            stored = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body = stored["Body"].read()
        except ClientError as read_error:
            if _error_code(read_error) in _NOT_FOUND:
                return None
            raise
        return stored["ETag"].strip('"') if body == data else None

    def upload(self, key: str, path: Path, size: int) -> str:
        full_key = self._key(key)
        with self._errors("upload", key):
            if size < MULTIPART_THRESHOLD:
                with open(path, "rb") as body:
                    response = self.client.put_object(Bucket=self.bucket, Key=full_key, Body=body)
                return response["ETag"].strip('"')
            self.client.upload_file(str(path), self.bucket, full_key, Config=LARGE_TRANSFER)
            return self.client.head_object(Bucket=self.bucket, Key=full_key)["ETag"].strip('"')

    def copy(self, source_key: str, key: str, size: int) -> str:
        source = {"Bucket": self.bucket, "Key": self._key(source_key)}
        with self._errors("copy", key):
            if size < COPY_OBJECT_LIMIT:
                extra = {}
                if size >= MULTIPART_SIZE:
                    # The source was uploaded in parts, so its checksum is a checksum of
                    # part checksums; ask for a whole-object one for the single-part
                    # copy, or some servers hand the source's on and every read fails
                    # botocore's response validation.
                    extra["ChecksumAlgorithm"] = "CRC32"
                response = self.client.copy_object(Bucket=self.bucket, Key=self._key(key), CopySource=source,
                                                   **extra)
                return response["CopyObjectResult"]["ETag"].strip('"')
            self.client.copy(source, self.bucket, self._key(key), Config=LARGE_TRANSFER)
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"].strip('"')

    def delete(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys a call
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            with self._errors("delete", keys[start]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RepositoryError(
                    f"cannot delete s3://{self.bucket}/{first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')} ({len(errors)} keys failed)"
                )

    def location(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}".rstrip("/") if key or self.prefix else f"s3://{self.bucket}"

    def https_url(self, key: str) -> str:
        """The object's https:// URL, as CloudFormation's TemplateURL takes it (a template
        too large to send inline is passed this way). Virtual-hosted style, except for
        bucket names with dots, which do not match S3's TLS certificate that way."""
        region = self.client.meta.region_name or "us-east-1"
        path = quote(self._key(key), safe="/")
        if "." in self.bucket:
            return f"https://s3.{region}.amazonaws.com/{self.bucket}/{path}"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{path}"
