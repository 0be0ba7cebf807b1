"""Uploaded LoRA files kept by content: a local folder or S3-compatible object storage, one interface.

A job names its file by a *reference*, kept in the store: a local path (the default, and what jobs
have always kept) or ``s3://bucket/key``. The bytes are kept under their sha256 (``<sha256>.safetensors``)
and checked against it on every read, so a worker on another machine needs only the store's URL and
the blob store's: it fetches the file into its own cache, verifies it, and loads that copy.

S3: ``s3://bucket[/prefix]`` with the endpoint and region as query parameters
(``?endpoint=http://10.0.0.5:8333&region=us-east-1``) or ``CARLOS_BLOBS_ENDPOINT`` / ``AWS_REGION``; the
credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or the secrets file's ``[carlos]
blobs_access_key_id`` / ``blobs_secret_access_key``. Messages name a blob store by :func:`where`: never
a credential (none can be in the URL: a ``user:password@`` part is refused).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from carlos.errors import InvalidInputError, InvalidLoRAFileError, StoreUnavailableError

SUFFIX = ".safetensors"
_CHUNK = 1 << 20


class Blobs(Protocol):
    """Where uploads are kept: :meth:`put` a verified file, :meth:`local` a verified local copy."""

    def where(self) -> str: ...

    def put(self, path: Path, sha256: str) -> str: ...

    def local(self, ref: str, sha256: str | None) -> Path: ...


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, ref: str, sha256: str | None, where: str) -> Path:
    """``path`` if its bytes hash to ``sha256`` (None: nothing to check), else InvalidLoRAFileError."""
    if sha256:
        actual = _digest(path)
        if actual != sha256:
            raise InvalidLoRAFileError(
                f"LoRA file {ref} on {where} does not match its upload: expected sha256 {sha256}, got {actual}; "
                "it was replaced or corrupted after upload, so nothing was generated (submit it again)"
            )
    return path


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)  # a half-copied file is never used


@dataclass(frozen=True)
class LocalBlobs:
    """A folder (default ``data/cache/uploads``): the reference is the file's path, as jobs always kept it."""

    root: Path

    def where(self) -> str:
        return str(self.root)

    def put(self, path: Path, sha256: str) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self.root / f"{sha256}{SUFFIX}"
        if not dest.exists():
            _copy_atomic(path, dest)
        return str(dest)

    def local(self, ref: str, sha256: str | None) -> Path:
        path = Path(ref)
        if not path.is_file():
            raise InvalidLoRAFileError(
                f"LoRA file {ref} is missing on this machine; a worker elsewhere needs a shared blob store (--blobs)"
            )
        return _check(path, ref, sha256, "this machine")


@dataclass(frozen=True)
class S3Blobs:
    """A bucket of S3-compatible object storage; fetched files are cached (verified) in ``cache``."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    cache: Path
    credentials: tuple[str, str] | None = None

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/") + (f" at {self.endpoint}" if self.endpoint else "")

    def _client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:  # pragma: no cover - boto3 is in requirements.txt
            raise StoreUnavailableError("boto3 is not installed: `pip install boto3`") from e
        key_id, secret = self.credentials or (None, None)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60),
        )

    def _key(self, sha256: str) -> str:
        return f"{self.prefix.strip('/')}/{sha256}{SUFFIX}".lstrip("/")

    def _fail(self, doing: str, err: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"the blob store {self.where()} failed {doing}: {type(err).__name__}: {err}")

    def put(self, path: Path, sha256: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key, client = self._key(sha256), self._client()
        try:
            try:
                client.head_object(Bucket=self.bucket, Key=key)  # content-addressed: already there
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
                client.upload_file(str(path), self.bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}})
        except (BotoCoreError, ClientError) as e:
            raise self._fail(f"storing {path.name}", e) from None
        return f"s3://{self.bucket}/{key}"

    def local(self, ref: str, sha256: str | None) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = _split_s3(ref)
        name = Path(key).name
        if not name.endswith(SUFFIX) or "/" in name or name.startswith("."):
            raise InvalidInputError(f"not a blob reference of an upload: {ref}")
        self.cache.mkdir(parents=True, exist_ok=True)
        dest = self.cache / name
        if dest.is_file():
            try:
                return _check(dest, ref, sha256, "this machine's blob cache")
            except InvalidLoRAFileError:
                dest.unlink()  # a damaged cached copy: fetched again below
        tmp = dest.with_name(f"{name}.{os.getpid()}.part")
        try:
            self._client().download_file(bucket, key, str(tmp))
        except ClientError as e:
            tmp.unlink(missing_ok=True)
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise InvalidLoRAFileError(f"LoRA file {ref} is missing from the blob store {self.where()}") from None
            raise self._fail(f"fetching {ref}", e) from None
        except BotoCoreError as e:
            tmp.unlink(missing_ok=True)
            raise self._fail(f"fetching {ref}", e) from None
        try:
            _check(tmp, ref, sha256, f"the blob store {self.where()}")
        except InvalidLoRAFileError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        return dest


def _split_s3(ref: str) -> tuple[str, str]:
    parts = urlsplit(ref)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidInputError(f"not an s3:// reference: {ref}")
    return parts.netloc, parts.path.lstrip("/")


def is_s3(target: object) -> bool:
    return isinstance(target, str) and target.lower().startswith("s3://")


def open_blobs(target: str | Path | None, *, cache: Path, secrets: Mapping[str, Any] | None = None) -> Blobs:
    """The blob store ``target`` names: ``s3://bucket[/prefix][?endpoint=…&region=…]`` or a folder
    (None: ``cache / "uploads"``, today's default). ``cache``: where fetched objects are kept."""
    if target is None or not is_s3(target):
        return LocalBlobs(Path(target) if target is not None else cache / "uploads")
    parts = urlsplit(str(target))
    if "@" in parts.netloc:
        raise InvalidInputError("a blob store URL carries no credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if secrets is None:
        from carlos.config import carlos_secrets

        secrets = carlos_secrets()
    key_id = os.environ.get("AWS_ACCESS_KEY_ID") or secrets.get("blobs_access_key_id")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or secrets.get("blobs_secret_access_key")
    return S3Blobs(
        bucket=parts.netloc,
        prefix=parts.path.strip("/"),
        endpoint=query.get("endpoint") or os.environ.get("CARLOS_BLOBS_ENDPOINT") or None,
        region=query.get("region") or os.environ.get("AWS_REGION") or "us-east-1",
        cache=cache / "blobs",
        credentials=(str(key_id), str(secret)) if key_id and secret else None,
    )


def local_copy(ref: str, sha256: str | None, blobs: Blobs | None, *, cache: Path) -> Path:
    """A verified local file for a job's reference: through ``blobs`` when they are S3, else by its
    form (an ``s3://`` reference through the configured blob store, ``CARLOS_BLOBS`` / ``[carlos] blobs``,
    whose endpoint and credentials this machine has; a path as it is)."""
    if is_s3(ref) and not isinstance(blobs, S3Blobs):
        from carlos.config import default_paths

        configured = default_paths().blobs
        blobs = open_blobs(configured if is_s3(configured) else ref, cache=cache)
    return (blobs or LocalBlobs(cache / "uploads")).local(ref, sha256)
