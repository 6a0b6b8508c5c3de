"""Makes a container in a local Azurite (tests/store.rs's az:// test), which object_store cannot.

    python3 tests/python/az_container.py http://127.0.0.1:PORT CONTAINER

Azurite's account and key are the emulator's published development credentials
(devstoreaccount1), not a secret.
"""

import sys

from azure.storage.blob import BlobServiceClient

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> None:
    url, container = sys.argv[1], sys.argv[2]
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint={url}/devstoreaccount1;"
    )
    BlobServiceClient.from_connection_string(conn).create_container(container)


if __name__ == "__main__":
    main()
