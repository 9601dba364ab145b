"""Anonymous reading of a public S3 bucket over HTTPS: listing, streaming download, progress.

The original incasem publishes its checkpoints and example cells in the bucket
``s3://asem-project`` (:data:`DEFAULT_BASE_URL`). Everything here is plain HTTP(S):
S3's ``ListObjectsV2`` (``GET /?list-type=2&prefix=...``, paged by continuation tokens)
and ``GET /<key>``, so a mirror or a local test server laid out like the bucket serves
as well (``base_url``).

Every failure is one :class:`~incasem.errors.DownloadError` line. Callers pass a
``hint`` that ends each message with what to do in their setting (e.g. how to get
the file by hand, or that rerunning resumes).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from xml.etree import ElementTree

from tqdm import tqdm

from incasem.errors import DownloadError, option

DEFAULT_BASE_URL = "https://asem-project.s3.amazonaws.com"
"""HTTPS address of the public S3 bucket of the original incasem (checkpoints, example cells)."""

_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_S3_NS = "{*}"  # ElementTree wildcard: any (or no) XML namespace
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class BucketObject:
    """One object of a bucket listing.

    Attributes
    ----------
    key
        Full key, e.g. ``datasets/cell_6/cell_6.zarr/volumes/raw/.zarray``.
    size
        Size in bytes.
    etag
        The ETag without its quotes: the MD5 of the content for objects uploaded in
        one piece, ``<md5 of the parts' md5s>-<number of parts>`` for multipart uploads.
    """

    key: str
    size: int
    etag: str

    @property
    def md5(self) -> str | None:
        """The MD5 (hex) of the content when the ETag is one; ``None`` for a multipart ETag."""
        etag = self.etag.lower()
        return etag if _MD5_ETAG.fullmatch(etag) else None


@dataclass(frozen=True)
class Transfer:
    """What :func:`download` received: byte count and digests of the bytes."""

    size: int
    md5: str
    sha256: str


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash.

    Raises
    ------
    DownloadError
        If it is not an http:// or https:// address (``--base-url``).
    """
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise DownloadError(f"{option('base_url', '--base-url')} must be an http:// or https:// address, got {base_url!r}")
    return base_url.rstrip("/")


def object_url(base_url: str, key: str) -> str:
    """The address of object ``key`` (quoted) in the bucket at ``base_url``."""
    return f"{base_url}/{urllib.parse.quote(key)}"


@contextmanager
def open_url(url: str, hint: str) -> Iterator[http.client.HTTPResponse]:
    """``urlopen(url)`` with every failure to connect turned into a one-line ``DownloadError``.

    ``hint`` ends the message: what the user can do instead or next.
    """
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 404:
            raise DownloadError(f"{url} does not exist (HTTP 404): check {option('base_url', '--base-url')}, {hint}") from None
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}: try again later, {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"cannot reach {url} ({reason}): check the connection, {hint}") from None
    with response:
        yield response


def _listing_pages(base_url: str, query: dict[str, str], hint: str) -> Iterator[ElementTree.Element]:
    """The pages of one ListObjectsV2 listing, following continuation tokens."""
    token = None
    while True:
        page_query = dict(query, **({"continuation-token": token} if token is not None else {}))
        url = f"{base_url}/?{urllib.parse.urlencode({'list-type': '2', **page_query})}"
        with open_url(url, hint) as response:
            try:
                page = ElementTree.fromstring(response.read())
            except (ElementTree.ParseError, OSError, http.client.HTTPException):
                raise DownloadError(f"{url} did not answer an S3 bucket listing: check {option('base_url', '--base-url')}, {hint}") from None
        yield page
        if page.findtext(f"{_S3_NS}IsTruncated") != "true":
            return
        token = page.findtext(f"{_S3_NS}NextContinuationToken")
        if not token:
            raise DownloadError(f"{url} is a truncated bucket listing without a continuation token: {hint}")


def _bucket_object(element: ElementTree.Element, base_url: str, hint: str) -> BucketObject:
    key = element.findtext(f"{_S3_NS}Key") or ""
    size = (element.findtext(f"{_S3_NS}Size") or "").strip()
    if not size.isdigit():
        raise DownloadError(f"the listing of {base_url} gives {key!r} no valid size ({size!r}): check {option('base_url', '--base-url')}, {hint}")
    etag = (element.findtext(f"{_S3_NS}ETag") or "").strip().strip('"')
    return BucketObject(key, int(size), etag)


def list_objects(base_url: str, prefix: str, hint: str) -> list[BucketObject]:
    """Every object whose key starts with ``prefix``, with size and ETag, in listing order.

    Raises
    ------
    DownloadError
        If the bucket cannot be reached or does not answer a valid listing.
    """
    return [
        _bucket_object(element, base_url, hint) for page in _listing_pages(base_url, {"prefix": prefix}, hint) for element in page.iterfind(f"{_S3_NS}Contents")
    ]


def list_prefixes(base_url: str, prefix: str, hint: str) -> list[str]:
    """The "folders" right below ``prefix`` (keys up to the next ``/``, delimiter listing).

    ``list_prefixes(url, "datasets/", ...)`` gives ``["datasets/cell_1/", ...]``.
    """
    return [
        element.text or ""
        for page in _listing_pages(base_url, {"prefix": prefix, "delimiter": "/"}, hint)
        for element in page.iterfind(f"{_S3_NS}CommonPrefixes/{_S3_NS}Prefix")
    ]


def byte_bar(label: str, enabled: bool, total: int | None = None) -> tqdm:
    """A progress bar counting bytes, on stderr, that erases itself when done."""
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, leave=False)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download(url: str, stream: BinaryIO, *, hint: str, label: str | None = None, on_bytes: Callable[[int], object] | None = None) -> Transfer:
    """Stream ``url`` into ``stream`` in 1 MiB pieces; return the byte count and digests.

    Memory stays at one piece whatever the size. Errors of ``stream`` (e.g. a full
    disk) propagate as they are.

    Parameters
    ----------
    url, stream
        What to fetch and where to write it.
    hint
        Ends every error message: what the user can do instead or next.
    label
        Show a progress bar of this file with this label (on stderr, once connected).
    on_bytes
        Called with the size of every piece written (e.g. an overall bar's ``update``).

    Raises
    ------
    DownloadError
        If the server cannot be reached, answers an error, or the transfer breaks off
        or delivers fewer bytes than announced.
    """
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    received = 0
    with open_url(url, hint) as response:
        expected = _content_length(response)
        with byte_bar(label or "", label is not None, expected) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as error:
                    raise DownloadError(f"download of {url} broke off after {received} bytes ({error}): fetch again, {hint}") from None
                if not chunk:
                    break
                stream.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if on_bytes is not None:
                    on_bytes(len(chunk))
    if expected is not None and received != expected:
        raise DownloadError(f"download of {url} is truncated ({received} of {expected} bytes): fetch again, {hint}")
    return Transfer(received, md5.hexdigest(), sha256.hexdigest())
