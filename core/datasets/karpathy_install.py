"""Install Karpathy's splits of COCO 2014 (``dataset_coco.json``) into the CS231n COCO dataset folder.

The file comes in ``caption_datasets.zip`` from Karpathy's NeuralTalk page, beside the Flickr8k and Flickr30k
ones. Its publisher gives no checksum and we found none published, so none is built in: what is verified is the
zip's own CRCs, that it holds ``dataset_coco.json``, and that the JSON parses with Karpathy's COCO structure
(``core.data.karpathy``), before the file appears in the dataset folder. Pass ``--karpathy-sha256`` to pin the
archive once you know its digest. ``python -m core.datasets.coco --karpathy`` is its command line.
"""
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from core.data.download import check_source, download, safe_extract_zip
from core.data.karpathy import read_karpathy_json
from core.data.layout import KARPATHY_ARCHIVE, KARPATHY_FILE
from core.runtime.errors import UserError
from core.runtime.fileio import remove_left_by_dead

KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
STAGING_PREFIX = ".karpathy.install."


def install_karpathy_splits(data_dir, url=KARPATHY_URL, sha256=None, keep_archive=False, progress=True):
    """Download, verify and install ``dataset_coco.json`` into ``data_dir``; return the JSON's Path.

    A valid JSON already there is left as it is, an invalid one refused (never overwritten). The archive is
    downloaded beside ``data_dir`` (an interrupted download resumes on the next run) and deleted after a
    successful install unless ``keep_archive``.
    """
    data_dir = Path(data_dir)
    check_source(url, sha256, "--karpathy-url", "--karpathy-sha256")
    json_path = data_dir / KARPATHY_FILE
    if json_path.exists():
        try:
            read_karpathy_json(json_path)
        except UserError as err:
            raise UserError(f"{json_path} exists but is not Karpathy's COCO splits ({err}); remove it and run "
                            "again") from None
        print(f"{data_dir} already holds Karpathy's splits ({KARPATHY_FILE})")
        return json_path
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a dataset folder: install the CS231n COCO data first (bash "
                        "core/datasets/get_datasets.sh --karpathy does both)")
    archive = download(url, data_dir.parent / KARPATHY_ARCHIVE, sha256=sha256, desc=KARPATHY_ARCHIVE,
                       progress=progress)
    member = coco_member(archive)
    try:
        _extract_checked(archive, member, json_path, progress)
        if not keep_archive:
            archive.unlink()
    except OSError as err:  # a read-only folder or a full disk
        raise UserError(f"cannot write in {data_dir} ({err.strerror or err}); make it writable and free space on "
                        "its disk") from err
    print(f"installed Karpathy's splits in {json_path}")
    return json_path


def coco_member(archive):
    """The name of the archive's one ``dataset_coco.json`` member, after checking every member's CRC."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            bad_member = zf.testzip()
    # A damaged deflate stream fails in zlib before testzip can name the member.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise UserError(f"{archive} is not a readable zip archive ({err}); delete it and run again") from None
    if bad_member is not None:
        raise UserError(f"{archive}: member {bad_member} fails its CRC check; delete the archive and run again")
    members = [name for name in names if PurePosixPath(name).name == KARPATHY_FILE]
    if len(members) != 1:
        found = "no" if not members else f"{len(members)}"
        raise UserError(f"{archive} holds {found} {KARPATHY_FILE} (one expected); delete it and check --karpathy-url")
    return members[0]


def _extract_checked(archive, member, json_path, progress):
    """Extract ``archive`` safely beside the dataset; move its ``member`` to ``json_path`` once it parses."""
    parent = json_path.parent.parent
    remove_left_by_dead(parent, STAGING_PREFIX)  # installs killed mid-way
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}.", dir=parent))
    try:
        extracted = safe_extract_zip(archive, staging / "archive", progress=progress) / member
        try:
            read_karpathy_json(extracted)
        except UserError as err:
            raise UserError(f"{archive} does not hold Karpathy's COCO splits ({err}); delete it and check "
                            "--karpathy-url") from None
        os.replace(extracted, json_path)
    finally:
        shutil.rmtree(staging)
