"""A local HTTP server laid out like the public S3 bucket, for the download tests.

It serves the files below ``Bucket.root`` by key (``GET /<key>``) and answers S3
ListObjectsV2 listings (``GET /?list-type=2&prefix=...[&delimiter=/]``) in pages of
``page_size`` keys, with each object's Size and ETag (the quoted MD5 of the file, as
S3 gives for single-part uploads). Faults are switched on per test: damaged objects,
listed-only keys, multipart-style ETags, and a server that fails after some objects.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


@dataclass
class Bucket:
    """What the local server serves, its faults, and a log of the requests it got.

    Attributes
    ----------
    root
        Folder whose files are the objects (key = path below ``root``).
    page_size
        Keys (and common prefixes) per listing page (S3: up to 1000).
    listed_only
        Keys the listing shows (size 1) but the server does not serve.
    damage
        Key -> ``"truncated"`` (honest length, half the bytes), ``"short"`` (the
        connection drops after half of the announced length) or ``"corrupt"`` (same
        size, different bytes).
    etags
        Key -> ETag to list instead of the MD5 (e.g. a multipart ``"<md5>-3"``).
    fail_after
        Answer HTTP 503 to every object request after this many were served.
    """

    root: Path
    page_size: int = 1000
    listed_only: tuple[str, ...] = ()
    damage: dict[str, str] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    fail_after: int | None = None
    requests: list[str] = field(default_factory=list)

    def listed_keys(self) -> list[str]:
        """Every listed key, sorted as S3 lists them."""
        served = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(served + list(self.listed_only))

    def downloads(self, prefix: str = "") -> int:
        """Object requests (not listings) for keys starting with ``prefix``."""
        return sum(1 for r in self.requests if not r.startswith("/?") and unquote(r[1:]).startswith(prefix))

    def etag(self, key: str) -> str:
        """The ETag listed for ``key``."""
        path = self.root / key
        md5 = hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "0" * 32
        return self.etags.get(key, md5)

    def size(self, key: str) -> int:
        path = self.root / key
        return path.stat().st_size if path.is_file() else 1


class BucketHandler(BaseHTTPRequestHandler):
    """Serves the objects of ``server.bucket`` and answers ListObjectsV2 listings, in pages."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        bucket: Bucket = self.server.bucket
        bucket.requests.append(self.path)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/" and query.get("list-type") == ["2"]:
            return self._listing(bucket, query)
        key = unquote(url.path.lstrip("/"))
        if bucket.fail_after is not None and bucket.downloads() > bucket.fail_after:
            return self._send(503, b"<Error><Code>SlowDown</Code></Error>")
        path = bucket.root / key
        if not path.is_file():
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>")
        data = path.read_bytes()
        damage = bucket.damage.get(key)
        if damage == "truncated":
            return self._send(200, data[: len(data) // 2])
        if damage == "corrupt":
            return self._send(200, bytes(b ^ 0xFF for b in data))
        self._send(200, data[: len(data) // 2] if damage == "short" else data, length=len(data))
        if damage == "short":
            self.close_connection = True

    def _listing(self, bucket: Bucket, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [None])[0]
        token = query.get("continuation-token", [None])[0]
        start = int(base64.b64decode(token).decode().split("=")[1]) if token else 0
        entries: list[tuple[str, str]] = []  # ("key" | "prefix", name), in order, prefixes once
        for key in (k for k in bucket.listed_keys() if k.startswith(prefix)):
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if ("prefix", common) not in entries:
                    entries.append(("prefix", common))
            else:
                entries.append(("key", key))
        page = entries[start : start + bucket.page_size]
        more = start + bucket.page_size < len(entries)
        nxt = base64.b64encode(f"start={start + bucket.page_size}".encode()).decode()  # has '=': needs quoting
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{bucket.size(k)}</Size><ETag>&quot;{bucket.etag(k)}&quot;</ETag></Contents>"
            for kind, k in page
            if kind == "key"
        )
        prefixes = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for kind, p in page if kind == "prefix")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>asem-project</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
            + contents
            + prefixes
            + f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{nxt}</NextContinuationToken>" if more else "")
            + "</ListBucketResult>"
        )
        self._send(200, body.encode(), content_type="application/xml")

    def _send(self, status: int, data: bytes, length: int | None = None, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(bucket: Bucket) -> Iterator[str]:
    """Serve ``bucket`` on 127.0.0.1 while the block runs; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BucketHandler)
    server.bucket = bucket
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def unreachable_url() -> str:
    """Base URL of a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
