"""The local S3 server really is an S3 server: it stores objects and refuses wrong credentials."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError


def test_put_get_and_auth(s3_server, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")  # keys from AWS_* variables
    s3.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"hello"
    bad = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError):
        bad.get_object(Bucket=s3_bucket, Key="a/b.txt")
