"""A small boto3 wrapper: list, upload and download folders of files under an S3 prefix.

Every network error becomes a CheckpointError naming the endpoint and bucket (never the credentials).
Every request is bounded by the `ckpt.s3_*` keys (S3Timeouts): botocore tries each request once, and
the retries are this module's and upload.py's own (`ckpt.s3_attempts`), so no wait is hidden. The
start-up check of the bucket and the listings use the short `s3_probe_timeout_s`: a silent endpoint
stops a run in seconds. A request that takes longer than a few seconds logs what it waits for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from internevo_jax.checkpoint import deadlines
from internevo_jax.checkpoint.deadlines import Countdown, StorageOutOfTime, logged_wait
from internevo_jax.checkpoint.errors import CheckpointError, StorageUnreachable, first_line
from internevo_jax.checkpoint.storage import S3Location, S3Settings, S3Timeouts

logger = logging.getLogger("internevo_jax")

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

    def __init__(self, settings: S3Settings, timeouts: S3Timeouts):
        boto3, botocore = _boto3()
        self._botocore = botocore
        self.settings = settings
        self.timeouts = timeouts

        def client(connect_s: float, read_s: float):
            config = botocore.config.Config(
                connect_timeout=connect_s,
                read_timeout=read_s,
                # One try per request: retries are counted (ckpt.s3_attempts) and logged here.
                retries={"total_max_attempts": 1, "mode": "standard"},
                # Path-style URLs work with every S3-compatible server (MinIO, Ceph, moto) and with AWS.
                s3={"addressing_style": "path"},
                max_pool_connections=TRANSFER_THREADS * 2,
            )
            return boto3.client(
                "s3",
                endpoint_url=settings.endpoint,
                region_name=settings.region,
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                config=config,
            )

        self.client = client(timeouts.connect_s, timeouts.read_s)  # transfers, markers, deletes
        self.probe_client = client(min(timeouts.connect_s, timeouts.probe_s), timeouts.probe_s)
        from boto3.s3.transfer import TransferConfig

        self._transfer_config = TransferConfig(num_download_attempts=1)

    @property
    def attempts(self) -> int:
        """Tries of each S3 operation of a save (`ckpt.s3_attempts`)."""
        return self.timeouts.attempts

    def _limit(self, probe: bool) -> tuple[float, str]:
        if probe:
            return self.timeouts.probe_s, "ckpt.s3_probe_timeout_s"
        return self.timeouts.read_s, "ckpt.s3_read_timeout_s"

    def _waiting(
        self,
        what: str,
        loc: S3Location,
        *,
        probe: bool,
        limit: str | None = None,
        every_s: float | None = None,
        level: int = logging.WARNING,
        progress: Callable[[], str] | None = None,
    ):
        """Log while a request (or a transfer of many files) waits on the endpoint."""
        seconds, key = self._limit(probe)
        return logged_wait(
            f"the S3 endpoint {self.settings.endpoint_name} to {what} {loc.url}",
            limit or f"each request gives up after {seconds:g} s without an answer ({key})",
            every_s=deadlines.S3_LOG_EVERY_S if every_s is None else every_s,
            level=level,
            progress=progress,
        )

    # -- error translation ------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str, loc: S3Location, *, probe: bool = False) -> Iterator[None]:
        exc = self._botocore.exceptions
        where = f"{loc.url} at endpoint {self.settings.endpoint_name}"
        try:
            yield
        except (exc.ConnectTimeoutError, exc.ReadTimeoutError) as err:
            raise self._timed_out(err, what, loc, probe) from err
        except (
            exc.EndpointConnectionError,
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
            if type(err).__name__ == "RetriesExceededError":  # s3transfer's wrapper of a failed download
                cause = getattr(err, "last_exception", None) or err
                if isinstance(cause, (exc.ConnectTimeoutError, exc.ReadTimeoutError)):
                    raise self._timed_out(cause, what, loc, probe) from err
                raise StorageUnreachable(
                    f"Cannot reach the S3 endpoint {self.settings.endpoint_name} while trying to {what} "
                    f"({loc.url}): {first_line(cause)}."
                ) from err
            if type(err).__name__ != "S3UploadFailedError":  # boto3's wrapper of a failed upload_file
                raise
            text = first_line(err)
            kind = StorageUnreachable if any(code in text for code in _SERVER_ERRORS) else CheckpointError
            raise kind(f"S3 error while trying to {what} {where}: {text}") from err

    def _timed_out(self, err: BaseException, what: str, loc: S3Location, probe: bool) -> StorageUnreachable:
        if isinstance(err, self._botocore.exceptions.ConnectTimeoutError):
            seconds = (
                min(self.timeouts.connect_s, self.timeouts.probe_s) if probe else self.timeouts.connect_s
            )
            key, did = "ckpt.s3_connect_timeout_s", "accepted no connection"
        else:
            (seconds, key), did = self._limit(probe), "did not answer"
        return StorageUnreachable(
            f"The S3 endpoint {self.settings.endpoint_name} {did} within {seconds:g} s ({key}) while "
            f"trying to {what} {loc.url} (bucket '{loc.bucket}'). Check that the server is up and that "
            f"AWS_ENDPOINT_URL (or the IP in 'boto3:s3://bucket.IP/prefix') names it; raise {key} if the "
            f"endpoint is only slow."
        )

    # -- operations ---------------------------------------------------------------------------
    def check_bucket(self, loc: S3Location) -> None:
        """Fail fast (within ckpt.s3_probe_timeout_s, one try) with a clear error when the endpoint,
        bucket or credentials are wrong."""
        seconds, key = self._limit(probe=True)
        with (
            self._waiting(
                "answer the check of the bucket of",
                loc,
                probe=True,
                limit=f"gives up after {seconds:g} s ({key})",
            ),
            self._errors("check the bucket", loc, probe=True),
        ):
            self.probe_client.head_bucket(Bucket=loc.bucket)

    def list_children(self, loc: S3Location) -> list[str]:
        """Names of the immediate 'sub-folders' under `loc` (common prefixes)."""
        prefix = loc.prefix + "/" if loc.prefix else ""
        names = []
        with self._waiting("list", loc, probe=True), self._errors("list", loc, probe=True):
            pages = self.probe_client.get_paginator("list_objects_v2").paginate(
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
        with self._waiting("list", loc, probe=True), self._errors("list", loc, probe=True):
            for page in self.probe_client.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=prefix
            ):
                keys.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        return keys

    def exists(self, loc: S3Location) -> bool:
        with self._waiting("read", loc, probe=True), self._errors("read", loc, probe=True):
            try:
                self.probe_client.head_object(Bucket=loc.bucket, Key=loc.prefix)
            except self._botocore.exceptions.ClientError as err:
                if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def read_text(self, loc: S3Location) -> str:
        with self._waiting("read", loc, probe=True), self._errors("read", loc, probe=True):
            body = self.probe_client.get_object(Bucket=loc.bucket, Key=loc.prefix)["Body"]
            return body.read().decode("utf-8")

    def write_text(self, loc: S3Location, text: str) -> None:
        with self._waiting("write", loc, probe=False), self._errors("write", loc):
            self.client.put_object(Bucket=loc.bucket, Key=loc.prefix, Body=text.encode("utf-8"))

    def upload_tree(
        self,
        local_dir: str,
        loc: S3Location,
        select: Callable[[str], bool] = lambda rel: True,
        *,
        until: Countdown | None = None,
    ) -> int:
        """Upload the files under `local_dir` for which select(relative path) is true; returns the count.

        With `until`, no file starts (and none goes on sending) once its deadline has passed: the
        upload then fails with StorageUnreachable naming the deadline's key.
        """
        files = []
        for root, _, names in os.walk(local_dir):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
                if select(rel):
                    files.append(rel)
        done = _Counter()

        def check_deadline(_sent: int = 0) -> None:
            if until is not None and until.expired():
                raise StorageOutOfTime(
                    f"The upload to {loc.url} at endpoint {self.settings.endpoint_name} did not finish "
                    f"within {until.deadline} ({done.value} of {len(files)} files of this process were "
                    f"uploaded); raise {until.deadline.key} for large checkpoints or slow links."
                )

        def put(rel: str) -> None:
            check_deadline()
            extra = {"Callback": check_deadline} if until is not None else {}
            with self._errors("upload", loc.join(rel)):
                self.client.upload_file(
                    os.path.join(local_dir, rel), loc.bucket, loc.join(rel).prefix, **extra
                )
            done.add()

        seconds, key = self._limit(probe=False)
        limit = f"each request gives up after {seconds:g} s without an answer ({key})"
        if until is not None:
            limit += f", the whole upload after {until.deadline}"
        with self._waiting(
            "take the upload to",
            loc,
            probe=False,
            limit=limit,
            every_s=deadlines.LOG_EVERY_S,
            level=logging.INFO,
            progress=lambda: f"{done.value} of {len(files)} files uploaded",
        ):
            self._run_all(put, files)
        return len(files)

    def download_tree(
        self, loc: S3Location, local_dir: str, select: Callable[[str], bool] = lambda rel: True
    ) -> int:
        """Download the keys under `loc` for which select(relative key) is true; returns the count.

        Each file is tried `ckpt.s3_attempts` times while the endpoint is unreachable.
        """
        files = [rel for rel in self.list_files(loc) if rel and not rel.endswith("/") and select(rel)]
        done = _Counter()

        def get(rel: str) -> None:
            target = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)

            def fetch() -> None:
                with self._errors("download", loc.join(rel)):
                    self.client.download_file(
                        loc.bucket, loc.join(rel).prefix, target, Config=self._transfer_config
                    )

            deadlines.retrying(f"downloading {loc.join(rel).url}", fetch, self.attempts)
            done.add()

        with self._waiting(
            "send",
            loc,
            probe=False,
            every_s=deadlines.LOG_EVERY_S,
            level=logging.INFO,
            progress=lambda: f"{done.value} of {len(files)} files downloaded",
        ):
            self._run_all(get, files)
        return len(files)

    def delete_tree(self, loc: S3Location) -> int:
        """Delete every key under `loc`; returns the count."""
        keys = [loc.join(rel).prefix for rel in self.list_files(loc)]
        with self._waiting("delete", loc, probe=False), self._errors("delete", loc):
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
            futures = [pool.submit(fn, item) for item in items]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # the first failure fails the whole transfer: start no more files
                    future.cancel()
                raise


class _Counter:
    """A count shared by the transfer threads (for the progress in "still waiting" lines)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1
