"""Download files that resume and verify themselves, and extract zip archives without escaping the target.

``download`` streams into ``DEST.part``; an interrupted download resumes from there with an HTTP Range
request, and only a complete, verified file is moved to ``DEST`` (so ``DEST`` is never half-written).
``safe_extract_zip`` checks every member before writing anything and extracts into a temporary
directory that becomes the target only once everything is out.
"""
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm import tqdm

from core.runtime.errors import UserError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
# What a failing network raises; all are OSErrors, so they are told apart from a failing disk first.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, ssl.SSLError)
URL_SCHEMES = ("http", "https", "file")


def check_source(url, sha256, url_flag="--url", sha256_flag="--sha256"):
    """UserError naming the flag unless ``url`` is an http(s) or file URL and ``sha256`` None or 64 hex digits:
    checked before anything is downloaded."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UserError(f"{sha256_flag} must be 64 hex digits, got {sha256!r}")
    if urlparse(url).scheme not in URL_SCHEMES:
        raise UserError(f"{url_flag} must be an http(s) or file URL, got {url!r}")


def sha256_of(path):
    """The hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, size, sha256, sha256_prefix):
    """Return why ``path`` fails its expected size/checksum, or None when it passes."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if sha256 is None and sha256_prefix is None:
        return None
    digest = sha256_of(path)
    expected = (sha256 or sha256_prefix).lower()
    if (sha256 is not None and digest != expected) or not digest.startswith(expected):
        return f"SHA-256 {digest}, expected {expected}{'' if sha256 else '...'}"
    return None


def _open(url, offset):
    """Open ``url`` asking for bytes from ``offset``; return (response, offset the body starts at)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None, offset  # nothing left past offset: the partial file is already complete
        raise
    if offset and response.status != 206:
        return response, 0  # the server ignored Range and sends the whole file: restart
    return response, offset


def _fetch(url, part, desc, progress):
    """Append the rest of ``url`` to ``part``, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    response, start = _open(url, offset)
    if response is None:
        return
    with response, open(part, "ab" if start else "wb") as out:
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=not progress) as bar:
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(block)
                bar.update(len(block))
    # urllib reports a connection closed before Content-Length bytes as a short read, not an error.
    received = part.stat().st_size
    if total is not None and received < total:
        raise http.client.IncompleteRead(b"", total - received)


def download(url, dest, sha256=None, size=None, desc=None, sha256_prefix=None, progress=True):
    """Download ``url`` to ``dest`` unless a verified copy is already there; return ``dest`` as a Path.

    Inputs:
    - url: http(s) or file URL.
    - dest: where the file goes; the download streams into ``dest + ".part"`` and resumes from it.
    - sha256: expected hex SHA-256 of the whole file, or None.
    - size: expected size in bytes, or None.
    - desc: label of the progress bar (default: the file name).
    - sha256_prefix: expected leading hex digits of the SHA-256 (torchvision file names carry 8).

    Raises UserError when offline or the server refuses (the partial file is kept for a later resume),
    when the folder cannot be written (read-only, full disk), and when the finished file fails its
    size/checksum (the partial file is deleted).
    """
    dest = Path(dest)
    if dest.exists():
        problem = _verify(dest, size, sha256, sha256_prefix)
        if problem:
            raise UserError(f"{dest} exists but has {problem}; delete it to download it again")
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _fetch(url, part, desc or dest.name, progress)
    except NETWORK_ERRORS as err:
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
        raise UserError(f"cannot download {url} ({reason}); check the network or place the file at {dest}") from err
    except OSError as err:
        raise UserError(f"cannot write in {dest.parent} ({err.strerror or err}); make it writable and free space "
                        "on its disk") from err
    problem = _verify(part, size, sha256, sha256_prefix)
    if problem:
        part.unlink()
        raise UserError(f"download of {url} has {problem}; deleted it: retry, or check the URL and checksum")
    os.replace(part, dest)
    return dest


def _member_problem(info, root):
    """Why a zip member may not be extracted under ``root`` (a resolved directory), or None."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        return "has an absolute path"
    resolved = (root / pure).resolve()
    if ".." in pure.parts or not resolved.is_relative_to(root):
        return "escapes the target directory"
    return None


def safe_extract_zip(archive, target_dir, progress=True):
    """Extract ``archive`` into ``target_dir`` (which must not exist or be empty), all or nothing.

    Refuses the whole archive, before writing anything, when a member has an absolute path, a ``..``
    component, or is a symbolic link. Members are extracted (and their CRCs checked) in a temporary
    directory beside the target, renamed to ``target_dir`` only when all succeeded.
    """
    archive, target_dir = Path(archive), Path(target_dir)
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise UserError(f"cannot extract {archive}: {target_dir} already exists and is not empty; remove it first")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            root = staging.resolve()
            for info in zf.infolist():
                problem = _member_problem(info, root)
                if problem:
                    raise UserError(f"refusing to extract {archive}: member {info.filename!r} {problem}")
            for info in tqdm(zf.infolist(), desc=f"extract {archive.name}", unit="file", disable=not progress):
                zf.extract(info, staging)
        os.replace(staging, target_dir)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise UserError(f"{archive} is not a valid zip archive ({err}); delete it and download it again") from err
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target_dir
