"""An S3 bucket (or a prefix in one) as the artefact repository, through boto3.

The client comes from ``aws_credentials.client`` (or the ``client_factory`` given):
endpoint, credentials and region from the environment mapping the repository is
opened with, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` included. Requests are
retried by botocore's ``standard`` mode (throttling, 5xx, dropped connections),
``AWS_MAX_ATTEMPTS`` times in all (default 5), the variable botocore itself reads.
What botocore does not retry is a body that fails while it is being read: those
reads are retried here as s3transfer retries its downloads, resuming where the
failure cut them off.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Mapping, Optional, Sequence
from urllib.parse import quote

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS

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
DEFAULT_MAX_ATTEMPTS = 5
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
log = logging.getLogger(__name__)
# What each S3 operation is authorized as (AWS's Service Authorization Reference for
# S3): a HEAD is GetObject, a multipart upload PutObject, a batch delete DeleteObject
# on each key, a copy GetObject on its source and PutObject on its target.
_IAM_ACTIONS = {"ListObjectsV2": "s3:ListBucket", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
                "PutObject": "s3:PutObject", "multipart upload": "s3:PutObject",
                "CopyObject": "s3:GetObject on the source and s3:PutObject",
                "multipart copy": "s3:GetObject on the source and s3:PutObject",
                "DeleteObjects": "s3:DeleteObject"}
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def max_attempts(environ: Mapping[str, str]) -> int:
    """``AWS_MAX_ATTEMPTS`` (botocore's own variable): requests, and reads of a body,
    are tried this many times in all."""
    text = environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not text:
        return DEFAULT_MAX_ATTEMPTS
    try:
        attempts = int(text)
    except ValueError:
        attempts = 0
    if attempts < 1:
        raise UsageError(f"AWS_MAX_ATTEMPTS={text!r}: give the number of attempts, a whole number >= 1")
    return attempts


class S3Repository:
    def __init__(self, client, bucket: str, prefix: str = "", attempts: int = DEFAULT_MAX_ATTEMPTS,
                 kms_key_id: Optional[str] = None) -> None:
        self.client = client
        self.attempts = attempts
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # repository_encryption (SPEC §11): every PutObject, CopyObject and multipart
        # upload names the key, so no object depends on the bucket's default.
        self.encryption: Dict[str, str] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {})

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str],
                 client_factory: Optional[aws_credentials.ClientFactory] = None,
                 kms_key_id: Optional[str] = None) -> "S3Repository":
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise UsageError(f"repository {url!r}: no bucket name; use s3://bucket[/prefix]")
        attempts = max_attempts(environ)
        client = (client_factory or aws_credentials.client)(
            "s3", environ,
            config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                          max_pool_connections=TRANSFER_THREADS + 8),
        )
        return cls(client, bucket, prefix, attempts, kms_key_id)

    def _key(self, key: str) -> str:
        return self.prefix + check_relative_path(key, self.url)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str, operation: str):
        """Turn botocore's exceptions into one clear line naming the key and the S3 operation."""
        where = f"s3://{self.bucket}/{self.prefix}{key}"
        try:
            yield
        except NoCredentialsError:
            raise UsageError(
                f"cannot {action} {where} ({operation}): no AWS credentials found; set them the usual way "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role)"
            ) from None
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise KeyNotFound(key) from None
            if code == "NoSuchBucket":
                raise UsageError(
                    f"bucket {self.bucket!r} does not exist ({operation} {where}): create it or fix "
                    "'repository' in envpipe.yml"
                ) from None
            if code in ("AccessDenied", "403"):
                # Name the IAM action, so the line says what the credentials' policy lacks.
                raise RepositoryError(
                    f"cannot {action} {where} ({operation}): access denied ({code}): these credentials may not "
                    f"{_IAM_ACTIONS.get(operation, operation)} there; compare their policy with what 'envpipe iam' "
                    "prints for this stage"
                ) from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise RepositoryError(
                    f"cannot {action} {where} ({operation}): the credentials are not valid ({code}); check the "
                    "agent's AWS keys"
                ) from None
            message = exc.response.get("Error", {}).get("Message", "")
            tries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
            tried = f" (after {tries + 1} attempts)" if tries else ""
            raise RepositoryError(f"cannot {action} {where} ({operation}): {code} {message}".rstrip()
                                  + tried) from None
        except BotoCoreError as exc:
            raise RepositoryError(f"cannot {action} {where} ({operation}): {exc}") from None

    def list(self, prefix: str, start_after: Optional[str] = None) -> Iterator[ObjectInfo]:
        arguments = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            arguments["StartAfter"] = self.prefix + start_after
        with self._errors("list", prefix, "ListObjectsV2"):
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"][len(self.prefix):],
                        size=item["Size"],
                        etag=item["ETag"].strip('"'),
                    )

    def list_folders(self, prefix: str) -> Iterator[str]:
        arguments = {"Bucket": self.bucket, "Prefix": self.prefix + prefix, "Delimiter": "/"}
        with self._errors("list", prefix, "ListObjectsV2"):
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                for item in page.get("CommonPrefixes", ()):
                    yield item["Prefix"][len(self.prefix):]

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        return _ResumingBody(self, key)  # type: ignore[return-value]

    def _get(self, key: str, **arguments: Any) -> Dict[str, Any]:
        with self._errors("read", key, "GetObject"):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **arguments)

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        arguments = {"Bucket": self.bucket, "Key": self._key(key), "Body": data, **self.encryption}
        if if_absent:
            arguments["IfNoneMatch"] = "*"
        with self._errors("write", key, "PutObject"):
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
            with self.open(key) as stored:
                body = stored.read()
        except KeyNotFound:
            return None
        return stored.etag if body == data else None

    def upload(self, key: str, path: Path, size: int) -> str:
        full_key = self._key(key)
        with self._errors("upload", key, "PutObject" if size < MULTIPART_THRESHOLD else "multipart upload"):
            if size < MULTIPART_THRESHOLD:
                with open(path, "rb") as body:
                    response = self.client.put_object(Bucket=self.bucket, Key=full_key, Body=body,
                                                      **self.encryption)
                return response["ETag"].strip('"')
            self.client.upload_file(str(path), self.bucket, full_key, Config=LARGE_TRANSFER,
                                    ExtraArgs=dict(self.encryption))
            return self.client.head_object(Bucket=self.bucket, Key=full_key)["ETag"].strip('"')

    def copy(self, source_key: str, key: str, size: int) -> str:
        source = {"Bucket": self.bucket, "Key": self._key(source_key)}
        with self._errors("copy", key, "CopyObject" if size < COPY_OBJECT_LIMIT else "multipart copy"):
            if size < COPY_OBJECT_LIMIT:
                extra = {}
                if size >= MULTIPART_SIZE:
                    # The source was uploaded in parts, so its checksum is a checksum of
                    # part checksums; ask for a whole-object one for the single-part
                    # copy, or some servers hand the source's on and every read fails
                    # botocore's response validation.
                    extra["ChecksumAlgorithm"] = "CRC32"
                response = self.client.copy_object(Bucket=self.bucket, Key=self._key(key), CopySource=source,
                                                   **extra, **self.encryption)
                return response["CopyObjectResult"]["ETag"].strip('"')
            self.client.copy(source, self.bucket, self._key(key), Config=LARGE_TRANSFER,
                             ExtraArgs=dict(self.encryption))
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"].strip('"')

    def delete(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys a call
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            with self._errors("delete", keys[start], "DeleteObjects"):
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


class _ResumingBody:
    """An object's body whose read, cut off mid-stream (a reset, a timeout, a short
    body), is resumed from where it stopped: a ranged GET of the same object (its
    ETag must still match), up to the repository's attempt count, as s3transfer
    retries a download. Then a RepositoryError naming the key and the operation."""

    def __init__(self, repository: S3Repository, key: str) -> None:
        self.repository = repository
        self.key = key
        response = repository._get(key)
        self.etag = response["ETag"].strip('"')
        self._body = response["Body"]
        self._position = 0
        self._failures = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        amount = None if size is None or size < 0 else size
        while True:
            try:
                chunk = self._body.read(amount)
            except S3_RETRYABLE_DOWNLOAD_ERRORS as exc:
                self._resume(exc)
                continue
            self._position += len(chunk)
            return chunk

    def _resume(self, exc: BaseException) -> None:
        self._failures += 1
        where = self.repository.location(self.key)
        if self._failures >= self.repository.attempts:
            raise RepositoryError(f"cannot read {where} (GetObject): the transfer failed {self._failures} times "
                                  f"mid-stream, last at byte {self._position}: {exc}") from None
        log.debug("reading %s failed at byte %d (%s); resuming", where, self._position, exc)
        with contextlib.suppress(Exception):
            self._body.close()
        try:
            with self.repository._errors("read", self.key, "GetObject"):
                try:
                    response = self.repository.client.get_object(
                        Bucket=self.repository.bucket, Key=self.repository._key(self.key),
                        Range=f"bytes={self._position}-", IfMatch=f'"{self.etag}"')
                except ClientError as error:
                    code = _error_code(error)
                    if code in ("PreconditionFailed", "412"):
                        raise RepositoryError(f"cannot read {where} (GetObject): the object was replaced while "
                                              "it was being read; run the stage again") from None
                    if code in ("InvalidRange", "416"):  # it failed after the last byte: nothing is left
                        self._body = io.BytesIO(b"")
                        return
                    raise
        except KeyNotFound:
            raise RepositoryError(f"cannot read {where} (GetObject): the object was deleted while it was "
                                  "being read; run the stage again") from None
        self._body = response["Body"]

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> "_ResumingBody":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
