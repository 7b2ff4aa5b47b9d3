"""Readers for every FER2013 format, splits and class statistics.

Every reader returns an `Images`: uint8 pixels `(N, 48, 48, 1)`, integer labels (or None when
the source is unlabelled), string ids, and the Kaggle `Usage` column when there is one.

Formats:
- CSV, optionally gzip-compressed: `label,feature` (training), `id,feature` (test),
  Kaggle's `emotion,pixels,Usage`. `feature`/`pixels` hold 2,304 space-separated 0-255 integers.
- Folders: class sub-folders named by class name or number (`train/angry/*.jpg`), or a flat
  folder of images (`00000.jpg`, `00001.png`, ...), any size or colour.
- A single image file.

Run `python -m keras_fer.data info PATH` to see what a file or folder holds.
"""

import argparse
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import re
import sys
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np

from keras_fer.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES, NUM_PIXELS, class_index
from keras_fer.cli import Parser, command, seed_value
from keras_fer.errors import FerDataError, FerError
from keras_fer.files import atomic_text, check_folder_for, check_not_input, check_not_inside, same_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Image suffixes that are not read (`IMAGE_EXTENSIONS` are): a missing `--image` file ending in one
#: is a mistyped path, not an id, and a folder's files ending in one are skipped with a note.
OTHER_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".ico", ".ppm", ".pbm", ".jp2")
#: Folders of other programs' metadata, skipped like hidden ones: a NAS's thumbnails, macOS zips' forks.
SYSTEM_FOLDERS = ("@eaDir", "__MACOSX")


def skipped_folder(name):
    """Whether a sub-folder named `name` is left out of image folders: hidden, or `SYSTEM_FOLDERS`."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def walk_files(folder, walked=None):
    """Yield `(folder path, file name)` of the files under `folder` that are not hidden, in
    sub-folders that are not `skipped_folder`s. Linked sub-folders are followed (Path.rglob,
    before Python 3.13, skipped them without a word), but no folder is walked twice: `walked`,
    the real paths walked already, may be shared across calls."""
    walked = set() if walked is None else walked
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:  # a link back up, or to a folder walked already
            folders[:] = []
            continue
        walked.add(real)
        folders[:] = [name for name in folders if not skipped_folder(name)]
        for name in names:
            if not name.startswith("."):
                yield Path(root), name


PIXEL_COLUMNS = ("feature", "pixels")
LABEL_COLUMNS = ("label", "emotion")
USAGE_VALUES = ("Training", "PublicTest", "PrivateTest")
USAGE_BY_LOWER = {value.lower(): value for value in USAGE_VALUES}
DEFAULT_CHUNK_ROWS = 4096
# What reading a broken file can raise: bad text, bad CSV, and a truncated or corrupt gzip
# stream (EOFError, gzip.BadGzipFile, or zlib.error, which is not an OSError).
READ_ERRORS = (UnicodeDecodeError, csv.Error, OSError, EOFError, gzip.BadGzipFile, zlib.error)
# Python's csv module refuses fields over 128 KiB by default; a FER row is ~9 KiB, so raise
# the limit only far enough that a garbage file still fails with a clear error.
csv.field_size_limit(1 << 24)


@dataclasses.dataclass
class Images:
    """A set of 48x48 grayscale faces.

    Attributes:
        pixels: uint8 array `(N, 48, 48, 1)`.
        labels: int64 array `(N,)` of class indices, or None when unlabelled.
        ids: array `(N,)` of strings: the CSV `id`, the image file's stem, or the row number.
        usage: array `(N,)` of Kaggle `Usage` strings, or None.
        source: where the images came from (a path or a description).
        named_ids: True when the ids come from the data (an `id` column, file names), not
            from row numbers: `write_csv` then keeps them.
    """

    pixels: np.ndarray
    labels: np.ndarray = None
    ids: np.ndarray = None
    usage: np.ndarray = None
    source: str = ""
    named_ids: bool = False

    def __post_init__(self):
        if self.ids is None:
            self.ids = np.array([str(i) for i in range(len(self.pixels))], dtype=object)

    def __len__(self):
        return len(self.pixels)

    @property
    def labelled(self):
        return self.labels is not None

    def subset(self, indices):
        """The images at `indices` (an index array or boolean mask), as a new `Images`."""
        pick = lambda array: None if array is None else array[indices]  # noqa: E731
        return Images(pick(self.pixels), pick(self.labels), pick(self.ids), pick(self.usage), self.source,
                      self.named_ids)

    def index_of(self, image_id):
        """The position of the image whose id is `image_id` (or, failing that, its row number)."""
        text = str(image_id)
        matches = np.flatnonzero(self.ids == text)
        if len(matches) == 0 and text.isascii() and text.isdigit():
            # "00000" names id 0 when ids are plain numbers, and a row number otherwise (a short
            # one: int() refuses 5,000 digits).
            matches = np.flatnonzero(self.ids == id_key(text))
            if len(matches) == 0 and len(text.lstrip("0")) < 19 and int(text) < len(self):
                return int(text)
        if len(matches) == 0:
            raise FerDataError(f"no image with id {text!r} (ids run {describe_ids(self.ids)})", self.source)
        return int(matches[0])

    def fingerprint(self):
        """A short SHA-256 of the pixels and labels, recorded in run configs."""
        digest = hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes())
        if self.labels is not None:
            digest.update(np.asarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def id_key(text):
    """What an id is to a scorer that reads numbers: "007", "+7" and "7" are one id, "-0" is
    "0". No `int()`: Python refuses to convert over 4,300 digits."""
    sign, digits = (text[0], text[1:]) if text[:1] in "+-" and len(text) > 1 else ("", text)
    if not (digits.isascii() and digits.isdigit()):
        return text
    digits = digits.lstrip("0") or "0"
    return digits if sign != "-" or digits == "0" else "-" + digits


def concatenate(parts, source=""):
    """Join several `Images` (e.g. the chunks of a CSV) into one."""
    parts = list(parts)
    if not parts:
        raise FerDataError("no images", source)
    join = lambda name: (  # noqa: E731
        None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
    )
    return Images(join("pixels"), join("labels"), join("ids"), join("usage"), source or parts[0].source,
                  parts[0].named_ids)


def describe_ids(ids):
    if len(ids) == 0:
        return "nowhere (no images)"
    return f"{ids[0]}..{ids[-1]}"


# --------------------------------------------------------------------------------------------
# CSV


def open_text(path):
    """Open a CSV as text, gunzipping it if it is gzipped; a UTF-8 byte-order mark (as Excel's
    "CSV UTF-8" writes) is dropped, so it does not become part of the first column's name.

    Bytes that are not UTF-8 come through as lone surrogates (`surrogateescape`) rather than
    failing where the reader's buffer happens to end, so `iter_csv` can name their own line, in
    line order with every other error (`_undecodable`)."""
    return io.TextIOWrapper(_open_bytes(path), encoding="utf-8-sig", errors="surrogateescape", newline="")


def _open_bytes(path):
    """A file's bytes, gunzipped when it is gzipped (by its magic number, not its name)."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


_SURROGATE = re.compile("[\udc80-\udcff]")


def _utf16(path):
    """Whether the (uncompressed) file starts with a UTF-16 byte-order mark, as Excel's
    "Unicode text" and PowerShell's default writes do."""
    with contextlib.suppress(OSError, EOFError, zlib.error), _open_bytes(path) as raw:
        return raw.read(2) in (b"\xff\xfe", b"\xfe\xff")
    return False


def _undecodable(fields):
    """The first byte that was not UTF-8 in a row's fields (see `open_text`), or None. Cheap
    for the usual all-ASCII row: `str.isascii` is a flag lookup."""
    for field in fields:
        if not field.isascii():
            found = _SURROGATE.search(field)
            if found:
                return bytes([ord(found.group()) - 0xDC00])
    return None


def _not_utf8(byte, path, line):
    return FerDataError(f"not UTF-8 text: byte {byte!r} cannot be decoded (save the file as UTF-8)", path, line)


def _parse_pixels(features, path, first_line, column):
    """Turn a list of pixel strings into `(n, 48, 48, 1)` uint8, naming the bad row if any."""
    count = len(features)
    if count == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
    # Fast path: parse the whole chunk at once, ending every row with a -1 sentinel so that a
    # short row followed by a long one cannot pass on the total count: each row's count holds
    # exactly when the sentinels land in the last column and nothing else is out of 0-255.
    text = " -1 ".join([*features, ""])  # the empty last item ends the last row with -1 too
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:  # a token that is not a number: the slow path below names it
        values = None
    if values is not None and values.size == count * (NUM_PIXELS + 1):
        values = values.reshape(count, NUM_PIXELS + 1)
        if (values[:, -1] == -1).all():
            values[:, -1] = 0
            if values.min() >= 0 and values.max() <= 255:
                return values[:, :NUM_PIXELS].astype(np.uint8).reshape(count, IMAGE_SIZE, IMAGE_SIZE, 1)
    # Slow path, only on bad data: find the first bad row and say what is wrong with it. It reads
    # as np.fromstring does: ASCII white space separates, an integer may have a sign.
    for offset, feature in enumerate(features):
        line = first_line + offset
        odd = _UNICODE_SPACE.search(feature)
        if odd is not None:  # str.split() would split at it, np.fromstring does not
            character = odd.group()
            before = len(feature[:odd.start()].split())
            where = f"after pixel {before}" if before else "before pixel 1"
            name = unicodedata.name(character, "white space").lower()
            raise FerDataError(f"U+{ord(character):04X} ({name}) {where}: only plain spaces (or tabs) "
                               "separate pixels", path, line, column)
        tokens = feature.split()  # only ASCII white space is left
        if "," in feature and len(feature.replace(",", " ").split()) == NUM_PIXELS:  # "1,2,3" or "1, 2, 3" quoted
            raise FerDataError(f"its {NUM_PIXELS} pixels are separated by commas: separate them by spaces",
                               path, line, column)
        if len(tokens) != NUM_PIXELS:
            raise FerDataError(f"expected {NUM_PIXELS} pixels, found {len(tokens)}", path, line, column)
        for position, token in enumerate(tokens):
            if not _INTEGER.fullmatch(token):
                raise FerDataError(f"pixel {position + 1} is not an integer: {token[:20]!r}", path, line, column)
            if not 0 <= int(token) <= 255:
                raise FerDataError(f"pixel {position + 1} is out of range 0-255: {token}", path, line, column)
    last_line = first_line + count - 1
    raise FerDataError(f"unreadable pixel values in lines {first_line}-{last_line}",  # pragma: no cover
                       path, None, column)


# What separates pixels: np.fromstring's white space, which is ASCII's only; any other (a no-break
# space pasted from a web page or a word processor) is named, not taken for a separator.
_UNICODE_SPACE = re.compile("[^\\S \t\n\r\f\v]")
_INTEGER = re.compile("[+-]?[0-9]+")


def _column(names, lowered, candidates, what, path):
    """The index of the one column named one of `candidates` (None if none). Two such columns
    (`label,emotion`, `feature,pixels`, `label,label`) are refused, naming both: taking the first
    silently could read the wrong labels or pixels."""
    found = [index for index, name in enumerate(lowered) if name in candidates]
    if len(found) > 1:
        first, second = found[:2]
        raise FerDataError(f"columns {first + 1} ({names[first]!r}) and {second + 1} ({names[second]!r}) both "
                           f"name the {what}: keep one of them (or rename the other)", path, 1)
    return found[0] if found else None


def _header_columns(header, path):
    names = [name.strip() for name in header]
    lowered = [name.lower() for name in names]
    pixel = _column(names, lowered, PIXEL_COLUMNS, "pixels", path)
    if pixel is None:
        if any(len(name.split()) > 100 for name in names):  # 2,304 grey levels: a data row, not a header
            raise FerDataError(f"no header line: the first line holds pixel values; add a header such as "
                               f"{'label,feature' if len(names) > 1 else 'feature'} as line 1", path, 1)
        if len(names) == 1 and any(mark in names[0] for mark in (";", "\t")):  # Excel in many locales, a TSV
            mark = ";" if ";" in names[0] else "\t"
            raise FerDataError(f"its fields are separated by {mark!r}, not commas: save it as a comma-separated "
                               f"CSV (header: {names[0][:100]!r})", path, 1)
        found = ", ".join(names) or "nothing"
        found = "".join(c if c.isprintable() else repr(c)[1:-1] for c in found[:200])  # no NULs or escapes
        raise FerDataError(f"missing pixel column: expected one of {', '.join(PIXEL_COLUMNS)}, found "
                           f"{found + ' ...' if len(', '.join(names)) > 200 else found}", path, 1)
    label = _column(names, lowered, LABEL_COLUMNS, "labels", path)
    image_id = _column(names, lowered, ("id",), "ids", path)
    usage = _column(names, lowered, ("usage",), "Usage", path)
    return names, pixel, label, image_id, usage


def _unclosed_quote(reader, fields, names, path, start, line):
    """The error for a record that ran from line `start` to `line` because a quote opened on
    `start` was not closed there (only an id may hold a line break: a file name can). It names
    the line where the record started, not the one where the CSV reader stopped (the file's last,
    for a quote never closed), and the field holding the line break."""
    spread = next((index for index, text in enumerate(fields) if "\n" in text or "\r" in text), None)
    field = names[spread] if spread is not None and spread < len(names) else None
    ended = False
    with contextlib.suppress(*READ_ERRORS):
        ended = next(reader, None) is None
    closed = "never closed" if ended else f"closed only on line {line}"
    end = " (the end)" if ended else ""
    return FerDataError(f"a quote opened on this line is {closed}: lines {start}-{line}{end} were read as one row",
                        path, start, field)


def _binary_kind(path):
    """What is wrong with reading `path` as a CSV, when its name or first bytes say it is a video,
    a GIF or a zip archive (None otherwise). Only signatures that no text starts with are looked
    at here; other images are named when their first line turns out not to be text."""
    from keras_fer.video import VIDEO_EXTENSIONS

    videos = "only predict.py reads videos"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return f"a video ({path.suffix}), not a FER CSV, image folder or image: {videos}"
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"\x1f\x8b"):  # a tar inside: Kaggle's own download is fer2013.tar.gz
        try:
            with gzip.open(path, "rb") as handle:
                block = handle.read(512)
        except (OSError, EOFError, zlib.error):
            block = b""  # a damaged gzip is named when it is read
    else:
        block = head
    if block[257:262] == b"ustar":
        return ("a tar archive, not a CSV: extract it first (tar xzf / tar xf; Kaggle's fer2013.tar.gz holds "
                "fer2013/fer2013.csv)")
    head = head[:12]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if path.suffix.lower() in (".xlsx", ".xlsm", ".ods", ".numbers"):
            return f"a spreadsheet ({path.suffix}), not a CSV: save it as CSV (comma-separated) first"
        return "a zip archive, not a CSV: unzip it first (a gzip-compressed CSV, .csv.gz, is read as it is)"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ("a GIF image, which keras-fer does not read: convert it to PNG (an animation to a video, "
                "for predict.py)")
    if path.suffix.lower() in OTHER_IMAGE_SUFFIXES:  # read as a CSV, a PPM said "missing pixel column: ... found P6"
        return (f"a {path.suffix[1:].upper()} image, which keras-fer does not read: convert it to one of "
                f"{', '.join(IMAGE_EXTENSIONS)}")
    if (head[4:8] == b"ftyp" and head[:2] == b"\x00\x00") or head.startswith(b"\x1aE\xdf\xa3") or \
            (head.startswith(b"RIFF") and head[8:12] == b"AVI "):
        return f"a video (MP4, QuickTime, Matroska, WebM or AVI), not a CSV: {videos}, by their extension " \
               f"({', '.join(VIDEO_EXTENSIONS[:4])}, ...)"
    return None


def iter_csv(path, chunk_rows=DEFAULT_CHUNK_ROWS, unique_ids=False):
    """Yield a FER CSV file as `Images` chunks of at most `chunk_rows` rows.

    Memory stays flat whatever the file size. Ids default to the 0-based row number. The ids of
    an unlabelled CSV (a test set) must be unique: predictions are written under them. A labelled
    CSV may repeat ids (training data needs none), unless `unique_ids`: readers that write
    results by id (`inference.predict_csv`) refuse a repeated id there too, whose predictions a
    scorer or `--saved-proba` could not tell apart.

    Raises:
        FerDataError: naming the file, the 1-based line and the field, for any malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise FerDataError("not a regular file (a device, pipe or folder)" if path.exists() else "no such file", path)
    kind = _binary_kind(path)
    if kind is not None:
        raise FerDataError(kind, path)
    with open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except READ_ERRORS as error:
            raise FerDataError(f"not a readable CSV file ({error})", path, 1) from None
        if header is None or not any(field.strip() for field in header):
            raise FerDataError("empty file: expected a header such as label,feature", path)
        byte = _undecodable(header)
        if byte is not None and _utf16(path):
            raise FerDataError("a UTF-16 text file: save the CSV as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)",
                               path, reader.line_num)
        if byte is not None:  # no text at all: most likely an image under another name
            from keras_fer.video import _image_format

            image = _image_format(path)
            if image is not None:
                raise FerDataError(f"not a CSV file but a {image} image: give it its image extension "
                                   f"(.{image.lower()})", path)
            raise FerDataError(f"not a CSV file: its first line is not text (byte {byte!r})", path, reader.line_num)
        names, pixel_col, label_col, id_col, usage_col = _header_columns(header, path)
        row_number = 0
        emitted = 0
        buffer = {"features": [], "labels": [], "ids": [], "usage": []}
        first_line = 2
        id_lines = {}

        def flush():
            nonlocal emitted
            pixels = _parse_pixels(buffer["features"], path, first_line, names[pixel_col])
            count = len(pixels)
            chunk = Images(
                pixels,
                np.array(buffer["labels"], dtype=np.int64) if label_col is not None else None,
                np.array(buffer["ids"], dtype=object),
                np.array(buffer["usage"], dtype=object) if usage_col is not None else None,
                str(path),
                named_ids=id_col is not None,
            )
            emitted += count
            for values in buffer.values():
                values.clear()
            return chunk

        def bad_row(message, line, field=None, buffered=None, error=None):
            """The error for a bad label, Usage, field count or byte at `line` (`error`, if
            made already); but an earlier row of the chunk with bad pixels (checked only at
            flush) is the first bad line, so its error wins. `buffered`: how many buffered rows
            come before `line`."""
            earlier = buffer["features"][:buffered]
            if earlier:
                _parse_pixels(earlier, path, first_line, names[pixel_col])
            return error or FerDataError(message, path, line, field)

        record_start = reader.line_num + 1
        try:
            for fields in reader:
                line = reader.line_num  # the record's last line: its first unless a quoted field held line breaks
                start, record_start = record_start, line + 1
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # a blank line, as at the end of many files
                if not buffer["features"]:
                    first_line = line
                byte = _undecodable(fields)
                if byte is not None:
                    raise bad_row(None, line, error=_not_utf8(byte, path, line))
                if line != start and (len(fields) != len(names) or any(
                        "\n" in text or "\r" in text for index, text in enumerate(fields) if index != id_col)):
                    raise bad_row(None, start, error=_unclosed_quote(reader, fields, names, path, start, line))
                if len(fields) != len(names):
                    raise bad_row(f"expected {len(names)} fields ({','.join(names)}), found {len(fields)}", line)
                # Rows in a chunk are contiguous lines unless blank lines intervene; keep the
                # line numbers exact by flushing at any gap.
                if buffer["features"] and line != first_line + len(buffer["features"]):
                    yield flush()
                    first_line = line
                buffered = len(buffer["features"])
                buffer["features"].append(fields[pixel_col])
                if label_col is not None:
                    text = fields[label_col].strip()
                    try:
                        buffer["labels"].append(class_index(text))
                    except ValueError:
                        raise bad_row(
                            f"unknown label {text!r}: expected 0-{NUM_CLASSES - 1} or a class name "
                            f"({', '.join(name.lower() for name in CLASS_NAMES)})", line, names[label_col], buffered
                        ) from None
                if id_col is not None:
                    text = fields[id_col].strip()
                    if not text:  # a submission row nobody could match
                        raise bad_row("empty id", line, names[id_col], buffered)
                    # Two predictions under one id: a scorer takes one. "7" and "007" are one id
                    # to a scorer reading numbers, and to `Images.index_of`.
                    key = id_key(text)
                    if (label_col is None or unique_ids) and key in id_lines:
                        first, seen = id_lines[key]
                        same = f"id {text!r} again" if seen == text else f"id {text!r} is id {seen!r} again"
                        raise bad_row(f"{same} (first at line {first}): ids must be unique",
                                      line, names[id_col], buffered)
                    id_lines[key] = (line, text)
                buffer["ids"].append(fields[id_col].strip() if id_col is not None else str(row_number))
                if usage_col is not None:
                    text = fields[usage_col].strip()
                    text = USAGE_BY_LOWER.get(text.lower(), text)  # "training" is Kaggle's "Training"
                    if text not in USAGE_VALUES:
                        raise bad_row(
                            f"unknown Usage {text!r}: expected one of {', '.join(USAGE_VALUES)}",
                            line, names[usage_col], buffered,
                        )
                    buffer["usage"].append(text)
                row_number += 1
                if len(buffer["features"]) >= chunk_rows:
                    yield flush()
        except READ_ERRORS as error:
            raise FerDataError(f"not a readable CSV file ({error})", path, reader.line_num) from None
        if buffer["features"]:
            yield flush()
        if emitted == 0:
            raise FerDataError("no data rows after the header", path)


# --------------------------------------------------------------------------------------------
# Images and folders


def read_file_bytes(path):
    """An image file's bytes as a uint8 array, None when `path` is not a regular file.

    Raises:
        FerDataError: when the file cannot be read (permission denied, an I/O error).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise FerDataError(f"cannot be read ({error.strerror or error})", path) from None


def decode_image(data, path=None):
    """`cv2.imdecode` of a file's bytes (None when they are no image it reads), turned upright as
    its EXIF orientation tag says (`exif_orientation`): a phone stores a portrait photo's pixels
    sideways with a tag that every viewer obeys, and `cv2.IMREAD_UNCHANGED` ignores it. OpenCV's
    own warnings ("PNG input buffer is incomplete") are silenced during the call, unless
    OPENCV_LOG_LEVEL asks for them: the caller's one-line error names the file.

    Raises:
        FerDataError: (naming `path`) for an image OpenCV refuses to decode, such as one whose
            header declares more than OpenCV's 2^30 pixels.
    """
    import cv2  # imported here: CSV users should not pay for OpenCV's start-up

    if data is None or not data.size:
        return None
    try:
        if "OPENCV_LOG_LEVEL" in os.environ:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        else:
            logging = cv2.utils.logging
            previous = logging.getLogLevel()
            logging.setLogLevel(min(previous, logging.LOG_LEVEL_ERROR))  # the caller's own level is put back
            try:
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            finally:
                logging.setLogLevel(previous)
    except cv2.error as error:  # an assertion, e.g. a 40-byte PNG declaring 200000x200000 pixels
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            raise FerDataError("too large to decode: its header declares more than 2^30 pixels (OpenCV's limit, "
                               "raised by the OPENCV_IO_MAX_IMAGE_PIXELS environment variable)", path) from None
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise FerDataError(f"unreadable image (OpenCV: {detail})", path) from None
    return None if image is None else apply_orientation(image, exif_orientation(data))


# What each EXIF orientation (tag 0x0112) asks a viewer to do to the stored pixels, as numpy
# operations on `(rows, columns, ...)` arrays; 1 is upright. Mirrored values 2, 4, 5, 7 come
# from front cameras and scanners.
ORIENTATIONS = {
    1: lambda image: image,
    2: lambda image: image[:, ::-1],  # mirrored left-right
    3: lambda image: image[::-1, ::-1],  # rotated 180
    4: lambda image: image[::-1],  # mirrored top-bottom
    5: lambda image: image.swapaxes(0, 1),  # transposed
    6: lambda image: np.rot90(image, -1),  # rotate 90 clockwise
    7: lambda image: image.swapaxes(0, 1)[::-1, ::-1],  # transverse
    8: lambda image: np.rot90(image, 1),  # rotate 90 counter-clockwise
}


def exif_orientation(data):
    """The EXIF orientation (1-8) of an image file's bytes: 1 (as stored) when it has no EXIF
    data, no orientation tag or an invalid one. Read with Pillow, only for files that hold EXIF
    data at all (JPEG's and WebP's `Exif`/`EXIF`, PNG's `eXIf` chunk, or a TIFF)."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not (raw[:4] in (b"II*\x00", b"MM\x00*") or b"Exif" in raw or b"EXIF" in raw or b"eXIf" in raw):
        return 1
    from PIL import Image  # imported here: only images with EXIF data pay for it

    try:
        with Image.open(io.BytesIO(raw)) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF data is no reason to refuse the pixels OpenCV read
        return 1
    return orientation if orientation in ORIENTATIONS else 1


def apply_orientation(image, orientation):
    """`image` (`(H, W)` or `(H, W, C)`, any dtype, alpha kept) as a viewer shows it under the
    EXIF `orientation` (1-8), as a contiguous array."""
    return np.ascontiguousarray(ORIENTATIONS[orientation](image))


def load_image(path):
    """Read one image file of any size or colour as a 48x48 grayscale uint8 `(48, 48, 1)`."""
    image = decode_image(read_file_bytes(path), path)
    if image is None:
        raise FerDataError("unreadable image (corrupt or not an image)", path)
    if image.dtype.kind == "f" and not np.isfinite(image).all():  # a float TIFF or EXR
        raise FerDataError("NaN or infinite pixel values", path)
    return to_face(image)


def to_uint8(image):
    """An image array's grey levels as uint8 0-255, as a viewer shows them: no contrast stretch.

    uint8 comes back as it is; 16-bit images are scaled by 1/257 (so `x * 257` is `x` again), other
    integer types by 255 / the type's maximum, negative values taken as 0; floats are 0-1 when
    their maximum is at most 1, else 0-255, and clipped to that range. (A min-max stretch, as
    before, turned a uniform 16-bit image black and brightened every dim face.) NaN pixels are
    the caller's to refuse.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:  # the usual case, in integers: exact, and half the memory of floats
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype.kind in "iub":
        scale = 1.0 if image.dtype.kind == "b" else np.iinfo(image.dtype).max / 255
        levels = np.maximum(image, 0).astype(np.float64) / scale
    else:
        levels = image.astype(np.float32 if image.dtype.itemsize <= 4 else np.float64)
        if levels.size and levels.max() <= 1:
            levels = levels * 255
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


def check_grey_levels(faces, stacklevel=3):
    """Warn when float faces look scaled to [0, 1] or [-1, 1] (face_classification's and many
    notebooks' preprocessing) where grey levels 0-255 are expected (`inference.predict_proba`:
    its predictors scale faces as their model needs), to which such faces are nearly black. A
    warning, not an error: dark faces are faces too. (`explain` takes any Keras model, whose
    input may well be 0-1: it does not warn.)"""
    faces = np.asarray(faces)
    if faces.dtype.kind == "f" and faces.size:
        low, high = float(faces.min()), float(faces.max())
        if 0.0 < high <= 1.0 and low >= -1.0:
            warnings.warn(f"faces look scaled to [0, 1] or [-1, 1] (values {low:g} to {high:g}), but the model "
                          "takes grey levels 0-255, to which they are nearly black: pass the raw pixels",
                          UserWarning, stacklevel=stacklevel)


def to_face(image):
    """Convert an image array (gray, BGR or BGRA, any size, uint8, 16-bit or float: `to_uint8`) to
    `(48, 48, 1)` uint8."""
    import cv2

    image = to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3:
        image = image[:, :, 0]
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        shrinking = image.shape[0] > IMAGE_SIZE or image.shape[1] > IMAGE_SIZE
        image = cv2.resize(
            image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return image.reshape(IMAGE_SIZE, IMAGE_SIZE, 1)


def check_name(path, part=None):
    """Refuse a file whose name is not UTF-8 (a zip made on another system): its id would be
    written into UTF-8 CSVs. `part` is what of the path becomes the id (default its name: the
    folders above the data may be named anyhow). Returns `path`.

    Raises:
        FerDataError: naming the file with its undecodable bytes escaped.
    """
    try:
        str(Path(path).name if part is None else part).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise FerDataError(f"{shown}: its name is not UTF-8 text (made on another system?): rename it") from None
    return path


def _image_files(folder):
    return sorted(
        check_name(p) for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _check_unique_stems(files, folder):
    """Refuse two images of an unlabelled folder with one stem (`0.png`, `0.jpg`): the stem is
    the id a prediction is written under."""
    first = {}
    for image in files:
        other = first.setdefault(id_key(image.stem), image)
        if other is not image:
            same = repr(image.stem) if other.stem == image.stem else f"{other.stem!r} / {image.stem!r}"
            raise FerDataError(f"{other.name} and {image.name} would both have the id {same}: "
                               "rename or move one", folder)


def _is_class_name(name):
    try:
        class_index(name)
    except ValueError:
        return False
    return True


def _check_nothing_left_out(folder, class_folders):
    """Refuse class folders holding images the reader would leave out without a word: in their
    own sub-folders (only a class folder's own images are read) or in formats not read (a GIF)."""
    left, walked = [], set()
    for sub in class_folders:
        for root, name in walk_files(sub, walked):
            suffix = Path(name).suffix.lower()
            if suffix in OTHER_IMAGE_SUFFIXES or (root != sub and suffix in IMAGE_EXTENSIONS):
                left.append((root / name).relative_to(folder))
    if left:
        first = left[0]
        why = (f"a format that is not read: convert to one of {', '.join(IMAGE_EXTENSIONS)}, or remove it"
               if first.suffix.lower() in OTHER_IMAGE_SUFFIXES else
               "in a sub-folder of its class folder: only a class folder's own images are read; move it up")
        more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
        raise FerDataError(f"{check_name(first)}{more} would be left out: {why}", folder)


def read_folder(path):
    """Read a folder of class sub-folders (labelled) or a flat folder of images (unlabelled)."""
    folder = Path(path)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not skipped_folder(p.name))
    files = _image_files(folder)
    classes = [sub.name for sub in subfolders if _is_class_name(sub.name)]
    if files and classes:  # read as a flat folder, it would drop every label without a word
        raise FerDataError(f"images at the top level ({files[0].name}, ...) beside class sub-folders "
                           f"({classes[0]}, ...): move them into their class folder or out of this folder", folder)
    parts = data_parts(folder) if not files else {}
    if parts:  # read as an image folder, it said "no images" or "sub-folder 'train' is not a class"
        held = " or ".join(str(part) + ("/" if part.is_dir() else "") for part in parts.values())
        raise FerDataError(f"a FER2013 folder: name the part to read, {held}", folder)
    if subfolders and not files:
        labels_of = {}
        for sub in subfolders:
            try:
                labels_of[sub] = class_index(sub.name)
            except ValueError:
                raise FerDataError(
                    f"sub-folder {sub.name!r} is not a class: name sub-folders 0-6 or "
                    f"{', '.join(name.lower() for name in CLASS_NAMES)}",
                    folder,
                ) from None
        _check_nothing_left_out(folder, list(labels_of))
        paths, labels = [], []
        for sub, label in labels_of.items():
            found = _image_files(sub)
            paths += found
            labels += [label] * len(found)
        if not paths:
            raise FerDataError("no images in the class sub-folders", folder)
        ids = [f"{p.parent.name}/{p.stem}" for p in paths]
        return Images(np.stack([load_image(p) for p in paths]), np.array(labels, np.int64),
                      np.array(ids, dtype=object), None, str(folder), named_ids=True)
    if not files:
        raise FerDataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) and no class sub-folders", folder)
    _check_unique_stems(files, folder)
    ids = np.array([p.stem for p in files], dtype=object)
    return Images(np.stack([load_image(p) for p in files]), None, ids, None, str(folder), named_ids=True)


# --------------------------------------------------------------------------------------------
# Entry points


def is_image_file(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read(path, chunk_rows=DEFAULT_CHUNK_ROWS):
    """Read any supported file or folder into one `Images`.

    Args:
        path: a CSV (optionally gzip-compressed), an image folder, or one image file.
        chunk_rows: rows parsed at a time for CSV files.

    Example:
    >>> faces = read("fer2013/train.csv.gz")  # doctest: +SKIP
    >>> faces.pixels.shape, faces.labels[:3]  # doctest: +SKIP
    ((28709, 48, 48, 1), array([0, 0, 2]))
    """
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise FerDataError("no such file or folder", path)
    if is_image_file(path):
        return Images(load_image(path)[None], None, np.array([path.stem], dtype=object), None, str(path),
                      named_ids=True)
    return concatenate(iter_csv(path, chunk_rows), str(path))


def resolve_data_path(path=None, kind="train"):
    """The data path from an option or `FER_DATA`; a folder holding `train.csv[.gz]` /
    `test.csv[.gz]` resolves to the file of that `kind`, and one holding `train/` / `test/`
    image folders (Kaggle's msambare/fer2013 layout) to that folder. Returns None when neither
    is set."""
    path = path or os.environ.get("FER_DATA") or None
    if path is None:
        return None
    path = Path(path)
    return data_parts(path).get(kind, path)


DATA_PARTS = ("train", "test")


def data_parts(folder):
    """`{kind: path}` of the parts a FER2013 folder holds: `train.csv[.gz]` / `test.csv[.gz]`,
    else `train/` / `test/` image folders (msambare's layout). Empty for anything else."""
    folder = Path(folder)
    parts = {}
    if folder.is_dir():
        for kind in DATA_PARTS:
            found = [folder / name for name in (f"{kind}.csv.gz", f"{kind}.csv") if (folder / name).is_file()]
            if found or (folder / kind).is_dir():
                parts[kind] = found[0] if found else folder / kind
    return parts


def existing_data_path(path=None, kind="train"):
    """`resolve_data_path`, refusing a path that names nothing. Commands call it before they import
    TensorFlow, so a mistyped `--data` fails at once.

    Raises:
        FerDataError: naming the path, and FER_DATA when the path came from there (a relative
            FER_DATA is read from the current folder, which the message says).
    """
    found = resolve_data_path(path, kind)
    where = "" if path else " (from FER_DATA)" if found is None or found.is_absolute() else (
        " (from FER_DATA: an absolute path works from any folder)")
    if found is not None and not found.exists():
        raise FerDataError(f"no such file or folder{where}", found)
    others = data_parts(found) if found is not None else {}
    if others:  # a FER2013 folder without this part, read as images it said "no images"
        held = ", ".join(path.name + ("/" if path.is_dir() else "") for path in others.values())
        raise FerDataError(f"no {kind}.csv[.gz] or {kind}/ in this folder{where}: it holds {held}", found)
    return found


def write_csv(images, path):
    """Write `images` as a FER CSV: `label,feature` when labelled, else `id,feature`, with an `id`
    column first too when labelled images have ids of their own (`Images.named_ids`); gzip when
    `path` ends in `.gz`. Written atomically."""
    with atomic_text(path) as out:
        _write_csv_rows(images, out)


def _check_ids_for_writing(images, path):
    """Refuse data whose ids repeat before its parts are written: labelled data may repeat ids
    (nothing is written under them), but the CSVs written would be refused by predict.py."""
    if not images.named_ids or not Path(path).is_dir():  # a CSV's ids are its own to repeat (training takes them)
        return
    first = {}
    for image_id in images.ids:
        key = id_key(str(image_id))
        if key in first:
            raise FerDataError(f"two images have the id {str(image_id)!r} (a class folder's a.png and a.jpg, say): "
                               "the CSVs written would repeat it, which predict.py refuses; rename one", path)
        first[key] = image_id


def _write_csv_rows(images, out):
    """`write_csv`'s header and rows, into the text stream `out`."""
    columns = (["id"] if images.named_ids or not images.labelled else []) + (["label"] if images.labelled else [])
    writer = csv.writer(out, lineterminator="\n")  # an id may hold a comma or a quote ("x,y.png")
    writer.writerow(columns + ["feature"])
    flat = images.pixels.reshape(len(images), NUM_PIXELS)
    for i in range(len(images)):
        first = [images.ids[i]] if columns[0] == "id" else []
        if images.labelled:
            first.append(images.labels[i])
        writer.writerow(first + [" ".join(map(str, flat[i].tolist()))])


# --------------------------------------------------------------------------------------------
# Splits and statistics


def parse_split(spec):
    """Check a validation split spec; return `(kind, value)` (see `split`)."""
    kind, _, value = str(spec).partition(":")
    if kind == "first":
        try:
            return kind, int(value)
        except ValueError:
            raise FerError(f"--val first:N needs an integer N. Received: val={spec!r}") from None
    if kind == "fraction":
        try:
            fraction = float(value)
        except ValueError:
            raise FerError(f"--val fraction:F needs a number F. Received: val={spec!r}") from None
        if not 0.0 < fraction < 1.0:
            raise FerError(f"--val fraction:F needs 0 < F < 1. Received: val={spec!r}")
        return kind, fraction
    if kind in ("usage", "none") and not value:
        return kind, None
    raise FerError(f"--val must be first:N, fraction:F, usage or none. Received: val={spec!r}")


def split_identity(spec, seed):
    """What decides a split's rows, to compare two runs' splits: `(kind, value, seed)`, where
    the seed counts only for `fraction:F` (`first:N`, `usage` and `none` ignore it) and the value
    is parsed (`fraction:0.10` is `fraction:0.1`). A spec that does not parse keeps its text.

    Example:
    >>> split_identity("usage", 1) == split_identity("usage", 2)
    True
    >>> split_identity("fraction:0.10", 0) == split_identity("fraction:0.1", 0)
    True
    >>> split_identity("fraction:0.1", 0) == split_identity("fraction:0.1", 1)
    False
    """
    try:
        kind, value = parse_split(spec)
    except FerError:
        return (spec, None, seed)
    return (kind, value, seed if kind == "fraction" else None)


def split(images, spec, seed=0):
    """Split labelled `images` into `(train, validation)`.

    Args:
        spec: `"first:N"` (the first N rows train, the rest validate: report 000 uses 25000),
            `"fraction:F"` (a random stratified fraction F validates: report 003 uses 0.12),
            `"usage"` (Kaggle's Usage column: Training trains, PublicTest validates; PrivateTest
            rows are left out of both, so they stay unseen), or `"none"` (no validation).
        seed: seed of the stratified draw.

    Raises:
        FerError: for a bad spec, or one that leaves no validation or no training rows.
    """
    kind, value = parse_split(spec)
    if kind == "none":
        return images, images.subset(np.zeros(0, dtype=np.int64))
    if not images.labelled:  # the parts would be trained on and scored: both need labels
        raise FerError(f"--val {spec} splits labelled data, and {images.source} has no labels")
    train, validation = _split(images, spec, kind, value, seed)
    for part, name in ((validation, "validation"), (train, "training")):  # an empty part was taken for --val none
        if len(part) == 0:
            raise FerError(f"--val {spec} leaves no {name} rows of the {len(images)} images of {images.source}")
    return train, validation


def _split(images, spec, kind, value, seed):
    count = len(images)
    if kind == "first":
        if not 0 < value < count:
            raise FerError(f"--val first:N needs 0 < N < {count} (the number of images). Received: val={spec!r}")
        return images.subset(np.arange(value)), images.subset(np.arange(value, count))
    if kind == "fraction":
        rng = np.random.default_rng(seed)
        validation = []
        for label in range(NUM_CLASSES):
            members = np.flatnonzero(images.labels == label)
            take = int(round(value * len(members)))
            validation.append(rng.permutation(members)[:take])
        is_validation = np.zeros(count, dtype=bool)
        is_validation[np.concatenate(validation)] = True
        return images.subset(np.flatnonzero(~is_validation)), images.subset(np.flatnonzero(is_validation))
    if images.usage is None:
        raise FerError(f"--val usage needs a Usage column (Kaggle's fer2013.csv). Received: data={images.source}")
    return images.subset(images.usage == "Training"), images.subset(images.usage == "PublicTest")


def class_counts(labels):
    """Images per class, as an int array of length 7."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_CLASSES)


def class_distribution(labels):
    """Rows of `(class index, class name, count, share)`, as report 003 tabulates."""
    counts = class_counts(labels)
    total = max(int(counts.sum()), 1)
    return [(i, CLASS_NAMES[i], int(counts[i]), counts[i] / total) for i in range(NUM_CLASSES)]


def class_weights(labels):
    """Inverse-frequency class weights `{class: N / (7 * n_class)}` (report 003, Q4)."""
    counts = class_counts(labels)
    total = counts.sum()
    return {i: float(total / (NUM_CLASSES * counts[i])) if counts[i] else 0.0 for i in range(NUM_CLASSES)}


def describe(images):
    """A few lines saying what `images` holds: count, per-class counts or unlabelled, ids."""
    plural = "s" if len(images) != 1 else ""
    lines = [f"{images.source}: {len(images)} image{plural} of {IMAGE_SIZE}x{IMAGE_SIZE} grayscale"]
    if images.labelled:
        lines.append(f"{'class':<12}{'count':>8}{'share':>9}")
        for index, name, count, share in class_distribution(images.labels):
            lines.append(f"{index} {name:<10}{count:>8}{share:>9.1%}")
    else:
        lines.append("unlabelled")
    if images.usage is not None:
        usage, counts = np.unique(images.usage, return_counts=True)
        lines.append("usage: " + ", ".join(f"{u} {c}" for u, c in zip(usage, counts)))
    lines.append(f"ids: {describe_ids(images.ids)}" if images.named_ids else
                 f"no ids: rows are numbered {describe_ids(images.ids)}")
    return "\n".join(lines)


@command  # package errors and OS errors: one line, exit 2
def main(argv=None):
    parser = Parser(
        prog="python -m keras_fer.data",
        description="Inspect FER data files and folders, and write the validation split a training run used.",
        epilog="example:\n  python -m keras_fer.data split ../shared/fer2013/train.csv.gz --val fraction:0.1 "
        "--split-seed 0 --out-val val.csv.gz\n  (the rows `train.py --recipe best --split-seed 0` validates on, "
        "for predict.py to score models and --saved-proba ensembles on)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print what a file or folder holds")
    info.add_argument("path", help="a FER CSV (optionally .gz), an image folder, an image, or a FER2013 folder "
                      "(train.csv.gz / test.csv.gz, or train/ / test/: each part is described)")
    splitter = commands.add_parser(
        "split", help="write the validation rows (and optionally the training rows) of a split as FER CSVs",
        description="Split labelled data as train.py --val/--split-seed do, and write the parts as FER CSVs "
        "(id,label,feature when the data has ids of its own, else label,feature; gzipped when the name ends in "
        ".gz; written atomically, and together: if either cannot be written, neither is).",
    )
    splitter.add_argument("path", help="a labelled FER CSV (optionally .gz) or image folder, or a FER2013 folder "
                          "(its train.csv[.gz] or train/)")
    splitter.add_argument("--val", default="fraction:0.1",
                          help="first:N, fraction:F or usage, as in train.py (default: fraction:0.1)")
    splitter.add_argument("--split-seed", type=seed_value, default=0, help="seed of the stratified draw (default: 0)")
    splitter.add_argument("--out-val", required=True, metavar="FILE", help="where the validation rows go")
    splitter.add_argument("--out-train", metavar="FILE", help="where the training rows go (default: not written)")
    args = parser.parse_args(argv)
    if args.command == "info":
        paths = list(data_parts(args.path).values()) or [existing_data_path(args.path)]
        print("\n\n".join(describe(read(path)) for path in paths))
        return 0
    args.path = existing_data_path(args.path)  # a FER2013 folder: its training part
    parse_split(args.val)  # a bad spec fails before the file is read
    outputs = (("--out-val", args.out_val), ("--out-train", args.out_train))
    check_not_input(outputs, args.path)
    check_not_inside(outputs, args.path)
    if args.out_train is not None and same_file(args.out_train, args.out_val):
        raise FerError(f"--out-val and --out-train are the same file ({args.out_val}): name two files")
    for _, out in outputs:  # both writable before either is written
        if out is not None:
            check_folder_for(out)
    images = read(args.path)
    _check_ids_for_writing(images, args.path)
    train, validation = split(images, args.val, seed=args.split_seed)
    if len(validation) == 0:  # --val none
        raise FerError(f"--val {args.val} leaves no validation rows of the {len(train)} images of "
                       f"{args.path} to write to --out-val")
    # Both parts are written to temporary files first and renamed into place only once both are
    # complete: an --out-train that cannot be written (a folder, say) leaves no --out-val behind.
    with contextlib.ExitStack() as staged:
        parts = [(validation, staged.enter_context(atomic_text(args.out_val)))]
        if args.out_train:
            parts.append((train, staged.enter_context(atomic_text(args.out_train))))
        for part, stream in parts:
            _write_csv_rows(part, stream)
    print(f"wrote {args.out_val}: {len(validation)} validation rows ({args.val}, split seed {args.split_seed})")
    if args.out_train:
        print(f"wrote {args.out_train}: {len(train)} training rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
