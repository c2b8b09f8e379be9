"""S3-compatible object storage for tests: moto's server mode in a thread (a real HTTP S3 endpoint, no network),
or a real MinIO when INSPECTOR_TEST_MINIO_URL=http://KEY:SECRET@HOST:PORT is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def create_bucket(self, prefix: str = "inspector-test") -> str:

        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def storages(self, bucket: str) -> dict:
        """The STORAGES setting that INSPECTOR_MEDIA_STORAGE=s3 builds, for this endpoint and bucket."""
        return {
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": bucket,
                    "endpoint_url": self.url,
                    "region_name": self.region,
                    "access_key": self.access_key,
                    "secret_key": self.secret_key,
                    "addressing_style": "path",
                    "signature_version": "s3v4",
                    "default_acl": None,
                    "file_overwrite": False,
                },
            },
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }

    def env(self, bucket: str) -> dict[str, str]:
        """The environment that selects this storage in another process (a worker)."""
        return {
            "INSPECTOR_MEDIA_STORAGE": "s3",
            "INSPECTOR_S3_BUCKET": bucket,
            "INSPECTOR_S3_ENDPOINT_URL": self.url,
            "INSPECTOR_S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


@contextmanager
def moto_s3() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(f"http://{host}:{port}", "testing", "testing")
    finally:
        server.stop()


def minio_from_env() -> S3Endpoint | None:
    raw = os.environ.get("INSPECTOR_TEST_MINIO_URL")
    if not raw:
        return None
    parts = urlsplit(raw)
    if not (parts.username and parts.password and parts.hostname):
        raise ValueError("INSPECTOR_TEST_MINIO_URL must look like http://KEY:SECRET@HOST:PORT")
    return S3Endpoint(f"{parts.scheme}://{parts.hostname}:{parts.port or 9000}", parts.username, parts.password)
