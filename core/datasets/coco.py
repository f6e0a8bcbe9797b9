"""Install the CS231n COCO captioning data (VGG16 fc7 features, PCA features, captions, vocabulary, URLs).

The archive is the one the classic CS231n ``get_datasets.sh`` fetches. Its publisher gives no checksum
and we found none published, so none is built in: what is verified is the zip's own CRCs, the list of
files it must hold, and every check of ``load_coco_data`` on the extracted files, before the dataset
directory appears. Pass ``--sha256`` to pin the archive once you know its digest.

With ``--karpathy`` it then installs Karpathy's splits (``dataset_coco.json``) into the same folder
(``core.datasets.karpathy_install``).

Usage: python -m core.datasets.coco [--dir DIR] [--url URL] [--sha256 HEX] [--keep-archive] [--no-progress]
                                    [--karpathy [--karpathy-url URL] [--karpathy-sha256 HEX]]
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from core.data.download import check_source, download, safe_extract_zip
from core.data.layout import (
    CAPTIONS_FILE,
    COCO_ARCHIVE_TOP,
    SPLITS,
    VOCAB_FILE,
    default_data_dir,
    features_file,
    urls_file,
)
from core.data.loader import load_coco_data
from core.datasets.karpathy_install import KARPATHY_URL, install_karpathy_splits
from core.runtime.cli import ArgumentParser, add_no_progress, run
from core.runtime.errors import UserError
from core.runtime.fileio import remove_left_by_dead

COCO_CAPTIONING_URL = "http://cs231n.stanford.edu/coco_captioning.zip"
ARCHIVE_TOP = COCO_ARCHIVE_TOP
EXPECTED_FILES = (CAPTIONS_FILE, VOCAB_FILE) + tuple(
    name for split in SPLITS for name in (features_file(split, True), features_file(split, False), urls_file(split)))


def check_archive(archive):
    """Raise UserError unless ``archive`` is an intact zip holding every expected file under its top folder."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            bad_member = zf.testzip()
    # A damaged deflate stream fails in zlib before testzip can name the member.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise UserError(f"{archive} is not a readable zip archive ({err}); delete it and run again") from err
    if bad_member is not None:
        raise UserError(f"{archive}: member {bad_member} fails its CRC check; delete the archive and run again")
    missing = [name for name in EXPECTED_FILES if f"{ARCHIVE_TOP}/{name}" not in names]
    if missing:
        raise UserError(f"{archive} lacks {', '.join(missing)} under {ARCHIVE_TOP}/; check --url")


def check_dataset(base_dir):
    """Run the loader's checks on both feature variants (the raw features are opened lazily, not read)."""
    for data in (load_coco_data(base_dir, pca_features=True), load_coco_data(base_dir, pca_features=False)):
        for split in SPLITS:
            close = getattr(data[f"{split}_features"], "close", None)
            if close is not None:
                close()


def install_coco_captioning(target_dir, url=COCO_CAPTIONING_URL, sha256=None, keep_archive=False, progress=True):
    """Download, verify and extract the COCO captioning data into ``target_dir``; return it as a Path.

    A ``target_dir`` that already passes the loader's checks is left as it is. The archive is downloaded
    beside ``target_dir`` (an interrupted download resumes on the next run) and deleted after a
    successful install unless ``keep_archive``. Nothing appears at ``target_dir`` unless every check passes.
    """
    target_dir = Path(target_dir)
    check_source(url, sha256)
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        try:
            check_dataset(target_dir)
        except UserError as err:
            raise UserError(f"{target_dir} exists but is not a complete dataset ({err}); "
                            "remove it and run again") from err
        print(f"{target_dir} already holds the COCO captioning data")
        return target_dir
    archive = download(url, target_dir.parent / f"{ARCHIVE_TOP}.zip", sha256=sha256, desc="coco_captioning.zip",
                       progress=progress)
    check_archive(archive)
    try:
        extract_checked(archive, target_dir, progress)
        if not keep_archive:
            archive.unlink()
    except OSError as err:  # a read-only folder or a full disk
        raise UserError(f"cannot write in {target_dir.parent} ({err.strerror or err}); make it writable and free "
                        "space on its disk, or give another --dir") from err
    print(f"installed the COCO captioning data in {target_dir}")
    return target_dir


def extract_checked(archive, target_dir, progress):
    """Extract ``archive`` beside ``target_dir`` and move its dataset there only once it passes the loader's checks."""
    remove_left_by_dead(target_dir.parent, f".{target_dir.name}.install.")  # installs killed mid-way
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.install.{os.getpid()}.", dir=target_dir.parent))
    try:
        extracted = safe_extract_zip(archive, staging / "archive", progress=progress) / ARCHIVE_TOP
        try:
            check_dataset(extracted)
        except UserError as err:
            raise UserError(f"{archive} does not hold a valid dataset ({err}); delete it and check --url") from err
        extracted.replace(target_dir)
    finally:
        shutil.rmtree(staging)


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m core.datasets.coco",
                            description="Download and install the CS231n COCO captioning data.")
    parser.add_argument("--dir", type=Path, default=default_data_dir(ARCHIVE_TOP),
                        help="dataset directory to create (default: core/datasets/coco_captioning)")
    parser.add_argument("--url", default=COCO_CAPTIONING_URL,
                        help=f"URL of the coco_captioning.zip archive (default {COCO_CAPTIONING_URL})")
    parser.add_argument("--sha256", default=None,
                        help="expected SHA-256 of the archive (none is published; without it the zip CRCs, "
                             "file list and dataset checks still run)")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded zips after installing")
    parser.add_argument("--karpathy", action="store_true",
                        help="also install Karpathy's splits of COCO (dataset_coco.json, from caption_datasets.zip) "
                             "into --dir, which training.py/inference.py --protocol karpathy read")
    parser.add_argument("--karpathy-url", default=None,
                        help=f"with --karpathy: URL of caption_datasets.zip (default {KARPATHY_URL})")
    parser.add_argument("--karpathy-sha256", default=None,
                        help="with --karpathy: expected SHA-256 of caption_datasets.zip (none is published; without "
                             "it the zip CRCs and the JSON's structure are still checked)")
    add_no_progress(parser)
    args = parser.parse_args(argv)
    if not args.karpathy and (args.karpathy_url or args.karpathy_sha256):
        parser.error("--karpathy-url and --karpathy-sha256 go with --karpathy")
    return args


def main(argv=None):
    args = parse_args(argv)
    karpathy_url = args.karpathy_url or KARPATHY_URL
    if args.karpathy:  # bad Karpathy flags fail before the long CS231n download, not after it
        check_source(karpathy_url, args.karpathy_sha256, "--karpathy-url", "--karpathy-sha256")
    install_coco_captioning(args.dir, url=args.url, sha256=args.sha256, keep_archive=args.keep_archive,
                            progress=not args.no_progress)
    if args.karpathy:
        install_karpathy_splits(args.dir, url=karpathy_url, sha256=args.karpathy_sha256,
                                keep_archive=args.keep_archive, progress=not args.no_progress)


if __name__ == "__main__":
    run(main)
