"""A local S3-compatible server for tests/store.rs: moto in server mode on 127.0.0.1.

Creates the buckets named on the command line, prints `listening http://127.0.0.1:PORT`, and
serves until its stdin closes (the test dropping its end), so it never outlives the test.
"""

import socket
import sys

import boto3
from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    for bucket in sys.argv[1:]:
        s3.create_bucket(Bucket=bucket)
    print(f"listening {url}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
