"""Where checkpoints live: `local:/path` (or a bare path) and `boto3:s3://bucket/prefix`.

S3 settings come from the environment, as boto3 and InternEvo read them:

* endpoint: the InternEvo form `boto3:s3://bucket.10.1.2.3/prefix` (endpoint http://10.1.2.3:80),
  else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, S3_ENDPOINT; none means AWS itself.
* region: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1.
* credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else InternEvo's S3_ACCESS_KEY_ID /
  S3_SECRET_ACCESS_KEY_ID or ACCESS_KEY / SECRET_ACCESS_KEY, else boto3's own chain (profiles, roles).

Credentials are kept out of every repr and log line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from internevo_jax.checkpoint.errors import CheckpointError

# InternEvo's boto3 URL form puts the endpoint's IPv4 address after the bucket name.
_BUCKET_WITH_IP = re.compile(r"^([^.]+)\.(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$")
_UNSUPPORTED_BACKENDS = ("volc:", "oss2:", "vc://", "ali://", "petrel:")


@dataclass(frozen=True)
class LocalLocation:
    """A folder on a file system every process can reach (for multi-host runs: a shared one)."""

    path: str

    def join(self, *parts: str | int) -> LocalLocation:
        return LocalLocation(os.path.join(self.path, *(str(p) for p in parts)))

    def __str__(self) -> str:
        return f"local:{self.path}"


@dataclass(frozen=True)
class S3Settings:
    """How to reach the S3 service. The secret never appears in repr()."""

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, url_endpoint: str | None = None, env: dict | None = None) -> S3Settings:
        env = os.environ if env is None else env

        def first(*names):
            return next((env[n] for n in names if env.get(n)), None)

        endpoint = url_endpoint or first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT")
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        return cls(
            endpoint=endpoint,
            region=first("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
            access_key=first("AWS_ACCESS_KEY_ID", "S3_ACCESS_KEY_ID", "ACCESS_KEY"),
            secret_key=first("AWS_SECRET_ACCESS_KEY", "S3_SECRET_ACCESS_KEY_ID", "SECRET_ACCESS_KEY"),
        )

    @property
    def endpoint_name(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


@dataclass(frozen=True)
class S3Timeouts:
    """How long S3 requests wait, from the `ckpt.s3_*` keys (docs/checkpoint.md, "Deadlines").

    connect_s: connecting, every request. read_s: the answer to a transfer request (upload,
    download, marker, delete). probe_s: the answer to the start-up check of the bucket and to each
    listing request, which are tried once. attempts: tries of each operation of a save and of each
    downloaded file.
    """

    connect_s: float
    read_s: float
    probe_s: float
    attempts: int

    @classmethod
    def from_config(cls, ck) -> S3Timeouts:
        return cls(
            connect_s=float(ck.s3_connect_timeout_s),
            read_s=float(ck.s3_read_timeout_s),
            probe_s=float(ck.s3_probe_timeout_s),
            attempts=int(ck.s3_attempts),
        )

    @classmethod
    def default(cls) -> S3Timeouts:
        from internevo_jax.config.schema import CkptConfig

        return cls.from_config(CkptConfig())


@dataclass(frozen=True)
class S3Location:
    """A key prefix in an S3 bucket."""

    bucket: str
    prefix: str
    settings: S3Settings = field(default_factory=S3Settings, compare=False)

    def join(self, *parts: str | int) -> S3Location:
        prefix = "/".join([self.prefix, *(str(p).strip("/") for p in parts)]).strip("/")
        return S3Location(self.bucket, prefix, self.settings)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __str__(self) -> str:
        return f"boto3:{self.url}"


Location = LocalLocation | S3Location


def parse_location(text: str, *, key: str = "ckpt.save_ckpt_folder", env: dict | None = None) -> Location:
    """Parse a checkpoint folder string from the config into a Location."""
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(
            f"{key} is empty; give a folder such as 'local:/ckpts/run1' or 'boto3:s3://bucket/run1'."
        )
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith(_UNSUPPORTED_BACKENDS):
        raise CheckpointError(
            f"{key}={text!r}: only the 'local:' and 'boto3:' (any S3-compatible store) backends are "
            f"supported. Point it at an S3-compatible endpoint with 'boto3:s3://bucket/prefix' and "
            f"AWS_ENDPOINT_URL, or at a local folder."
        )
    if lowered.startswith("boto3:"):
        text = text[len("boto3:") :]
    if text.lower().startswith("s3://"):
        return _parse_s3(text, key, env)
    if lowered.startswith("local:"):
        text = text[len("local:") :]
    if not text:
        raise CheckpointError(f"{key}='local:' names no folder; write e.g. 'local:/ckpts/run1'.")
    return LocalLocation(os.path.abspath(os.path.expanduser(text)))


def _parse_s3(url: str, key: str, env: dict | None) -> S3Location:
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise CheckpointError(f"{key}={url!r} names no bucket; write 'boto3:s3://bucket/prefix'.")
    url_endpoint = None
    match = _BUCKET_WITH_IP.match(bucket)
    if match:
        bucket, host, port = match.group(1), match.group(2), match.group(3) or "80"
        url_endpoint = f"http://{host}:{port}"
    return S3Location(bucket, prefix.strip("/"), S3Settings.from_env(url_endpoint, env))
