"""A small boto3 wrapper: list, upload and download folders of files under an S3 prefix.

Every network error becomes a CheckpointError naming the endpoint and bucket (never the credentials).
Timeouts are short so that a dead endpoint fails in seconds instead of hanging the run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from internevo_jax.checkpoint.errors import CheckpointError, StorageUnreachable, first_line
from internevo_jax.checkpoint.storage import S3Location, S3Settings

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
TRANSFER_THREADS = 8
# Answers that say the service is (momentarily) unable to serve, not that the request is wrong.
_SERVER_ERRORS = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
}


def _boto3():
    try:
        import boto3
        import botocore
        import botocore.config
        import botocore.exceptions  # noqa: F401
    except ImportError as err:
        raise CheckpointError(
            "Saving to or loading from 'boto3:s3://...' needs the boto3 package, which is not installed. "
            "Install it with `pip install boto3`, or use a 'local:' folder."
        ) from err
    return boto3, botocore


class S3Store:
    """File-level access to one S3 service; keys are addressed through S3Location values."""

    def __init__(self, settings: S3Settings):
        boto3, botocore = _boto3()
        self._botocore = botocore
        self.settings = settings
        config = botocore.config.Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": 2, "mode": "standard"},
            # Path-style URLs work with every S3-compatible server (MinIO, Ceph, moto) and with AWS.
            s3={"addressing_style": "path"},
            max_pool_connections=TRANSFER_THREADS * 2,
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=config,
        )

    # -- error translation ------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str, loc: S3Location) -> Iterator[None]:
        exc = self._botocore.exceptions
        where = f"{loc.url} at endpoint {self.settings.endpoint_name}"
        try:
            yield
        except (
            exc.EndpointConnectionError,
            exc.ConnectTimeoutError,
            exc.ReadTimeoutError,
            exc.ConnectionClosedError,
            exc.ConnectionError,
        ) as err:
            raise StorageUnreachable(
                f"Cannot reach the S3 endpoint {self.settings.endpoint_name} while trying to {what} "
                f"({loc.url}): {first_line(err)}. Check that the server is up and that AWS_ENDPOINT_URL "
                f"(or the IP in 'boto3:s3://bucket.IP/prefix') names it."
            ) from err
        except exc.NoCredentialsError as err:
            raise CheckpointError(
                f"No S3 credentials to {what} {where}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                f"(or S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY_ID) in the environment."
            ) from err
        except exc.ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket", "404") and what == "check the bucket":
                raise CheckpointError(
                    f"The S3 bucket '{loc.bucket}' does not exist at endpoint {self.settings.endpoint_name}. "
                    f"Create it first, or fix the bucket name in the checkpoint folder ({loc})."
                ) from err
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise CheckpointError(
                    f"S3 refused to {what} {where} ({code}). Check the credentials in AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY and the bucket's permissions."
                ) from err
            if code in _SERVER_ERRORS:
                raise StorageUnreachable(
                    f"The S3 endpoint {self.settings.endpoint_name} answered {code} while trying to {what} "
                    f"{where}: {first_line(err)}"
                ) from err
            raise CheckpointError(f"S3 error while trying to {what} {where}: {first_line(err)}") from err
        except Exception as err:
            if type(err).__name__ != "S3UploadFailedError":  # boto3's wrapper of a failed upload_file
                raise
            text = first_line(err)
            kind = StorageUnreachable if any(code in text for code in _SERVER_ERRORS) else CheckpointError
            raise kind(f"S3 error while trying to {what} {where}: {text}") from err

    # -- operations ---------------------------------------------------------------------------
    def check_bucket(self, loc: S3Location) -> None:
        """Fail fast (seconds) with a clear error when the endpoint, bucket or credentials are wrong."""
        with self._errors("check the bucket", loc):
            self.client.head_bucket(Bucket=loc.bucket)

    def list_children(self, loc: S3Location) -> list[str]:
        """Names of the immediate 'sub-folders' under `loc` (common prefixes)."""
        prefix = loc.prefix + "/" if loc.prefix else ""
        names = []
        with self._errors("list", loc):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    names.append(entry["Prefix"][len(prefix) :].rstrip("/"))
        return names

    def list_files(self, loc: S3Location) -> list[str]:
        """Keys under `loc`, relative to it."""
        prefix = loc.prefix + "/" if loc.prefix else ""
        keys = []
        with self._errors("list", loc):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=prefix
            ):
                keys.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        return keys

    def exists(self, loc: S3Location) -> bool:
        with self._errors("read", loc):
            try:
                self.client.head_object(Bucket=loc.bucket, Key=loc.prefix)
            except self._botocore.exceptions.ClientError as err:
                if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def read_text(self, loc: S3Location) -> str:
        with self._errors("read", loc):
            return self.client.get_object(Bucket=loc.bucket, Key=loc.prefix)["Body"].read().decode("utf-8")

    def write_text(self, loc: S3Location, text: str) -> None:
        with self._errors("write", loc):
            self.client.put_object(Bucket=loc.bucket, Key=loc.prefix, Body=text.encode("utf-8"))

    def upload_tree(
        self, local_dir: str, loc: S3Location, select: Callable[[str], bool] = lambda rel: True
    ) -> int:
        """Upload the files under `local_dir` for which select(relative path) is true; returns the count."""
        files = []
        for root, _, names in os.walk(local_dir):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
                if select(rel):
                    files.append(rel)

        def put(rel: str) -> None:
            with self._errors("upload", loc.join(rel)):
                self.client.upload_file(os.path.join(local_dir, rel), loc.bucket, loc.join(rel).prefix)

        self._run_all(put, files)
        return len(files)

    def download_tree(
        self, loc: S3Location, local_dir: str, select: Callable[[str], bool] = lambda rel: True
    ) -> int:
        """Download the keys under `loc` for which select(relative key) is true; returns the count."""
        files = [rel for rel in self.list_files(loc) if rel and not rel.endswith("/") and select(rel)]

        def get(rel: str) -> None:
            target = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with self._errors("download", loc.join(rel)):
                self.client.download_file(loc.bucket, loc.join(rel).prefix, target)

        self._run_all(get, files)
        return len(files)

    def delete_tree(self, loc: S3Location) -> int:
        """Delete every key under `loc`; returns the count."""
        keys = [loc.join(rel).prefix for rel in self.list_files(loc)]
        with self._errors("delete", loc):
            for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    @staticmethod
    def _run_all(fn: Callable[[str], None], items: list[str]) -> None:
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(TRANSFER_THREADS, len(items))) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()
