"""Which storage account a request may read keys from, and the client the service uses for it.

The tutorial lets every request carry a connection string and connects wherever it points: the server
becomes a proxy to any host a client names, and clients ship an account key with every request.
Here the service has its own credential (a connection string, or an account URL with
`DefaultAzureCredential`, i.e. managed identity on ACI and AKS). A request's `conn_str` is only
read for its account name: the account must be in `ALLOWED_STORAGE_ACCOUNTS`; the service's own
account is then reached with the service's own client, another allowed account at its official
endpoint (`https://<account>.blob.<suffix>`). No host chosen by a client is ever contacted.
"""

from __future__ import annotations

import hashlib
import threading
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient
from cachetools import LRUCache

from service.errors import BadRequest, Forbidden
from service.settings import Settings

_MAX_OTHER_ACCOUNT_CLIENTS = 16


def parse_connection_string(conn_str: str) -> dict[str, str]:
    """`Key=Value;...` pairs with upper-cased keys, as the Azure SDK reads them; values may contain '='."""
    pairs = {}
    for part in conn_str.split(";"):
        if not part.strip():
            continue
        key, separator, value = part.partition("=")
        if not separator or not key.strip():
            raise BadRequest("conn_str is not a valid Azure Storage connection string")
        pairs[key.strip().upper()] = value.strip()
    return pairs


def account_of(conn_str: str) -> str:
    """The storage account a connection string names (AccountName, else its blob endpoint's)."""
    pairs = parse_connection_string(conn_str)
    if pairs.get("ACCOUNTNAME"):
        return pairs["ACCOUNTNAME"]
    endpoint = urlsplit(pairs.get("BLOBENDPOINT", ""))
    host = endpoint.hostname or ""
    if host.count(".") >= 2 and not host.replace(".", "").isdigit():
        return host.split(".", 1)[0]
    path_account = endpoint.path.strip("/").split("/", 1)[0]
    if path_account:
        return path_account
    raise BadRequest("conn_str names no storage account")


class StorageAccess:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        options = {"connection_timeout": settings.storage_timeout_s, "read_timeout": settings.storage_timeout_s,
                   "retry_total": 1}
        self._options = options
        try:
            if settings.azure_storage_account_url:
                from azure.identity import DefaultAzureCredential  # only needed with managed identity

                self.own_client = BlobServiceClient(settings.azure_storage_account_url,
                                                    credential=DefaultAzureCredential(), **options)
            else:
                self.own_client = BlobServiceClient.from_connection_string(
                    settings.azure_storage_connection_string, **options)
        except (ValueError, AzureError) as exc:
            raise ValueError("AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT_URL is not usable: "
                             f"{type(exc).__name__}") from None
        self.own_account = self.own_client.account_name or ""
        self.allowed = set(settings.allowed_storage_accounts) or {self.own_account}
        self._lock = threading.Lock()
        self._others: LRUCache[str, BlobServiceClient] = LRUCache(maxsize=_MAX_OTHER_ACCOUNT_CLIENTS)

    def client_for(self, conn_str: str | None) -> BlobServiceClient:
        """The client to read a request's keys with; refuses accounts outside the allowlist."""
        if conn_str is None:
            return self.own_client
        account = account_of(conn_str)
        if account not in self.allowed:
            raise Forbidden(f"storage account '{account}' is not allowed here; upload the public keys to an "
                            "allowed account, or leave conn_str out to use the service's own account")
        if account == self.own_account:
            return self.own_client
        return self._other_account_client(account, conn_str)

    def _other_account_client(self, account: str, conn_str: str) -> BlobServiceClient:
        pairs = parse_connection_string(conn_str)
        credential = pairs.get("ACCOUNTKEY") and {"account_name": account, "account_key": pairs["ACCOUNTKEY"]}
        credential = credential or pairs.get("SHAREDACCESSSIGNATURE")
        if not credential:
            raise BadRequest(f"conn_str for account '{account}' carries neither AccountKey nor SharedAccessSignature")
        # Clients are cached by a digest so the credential itself is never kept as a key.
        digest = hashlib.sha256(conn_str.encode()).hexdigest()
        with self._lock:
            client = self._others.get(digest)
        if client is None:
            url = f"https://{account}.blob.{self._settings.storage_endpoint_suffix}"
            client = BlobServiceClient(url, credential=credential, **self._options)
            with self._lock:
                self._others[digest] = client
        return client
