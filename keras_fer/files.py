"""Atomic files: write into a temporary file in the target's folder, then `os.replace` it.

Readers see the old file or the complete new one, never a half-written file: an exception, a
crash or `kill -9` inside the block leaves the target as it was (an exception also removes the
temporary file). Every keras-fer module that writes a file goes through here.

Example:
>>> from keras_fer.files import atomic_open, write_json
>>> with atomic_open("out/predictions.csv", newline="") as stream:  # doctest: +SKIP
...     stream.write("id,label\\n")
>>> write_json("out/metrics.json", {"accuracy": 0.7})  # doctest: +SKIP
"""

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = [
    "atomic_open", "atomic_path", "atomic_text", "check_folder_for", "check_not_input", "check_not_inside",
    "file_sha256", "read_json_object", "same_file", "staged_folder", "write_json", "write_text",
]


def default_mode(folder=False):
    """The permissions a plain `open()` gives a new file (0o666 without the umask bits), or with
    `folder=True` the ones `mkdir` gives a new folder (0o777 without them)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def check_folder_for(path):
    """Check that `path` can get a folder: its nearest existing ancestor is a folder, not a file.

    Raises:
        OSError: ENOTDIR naming the file in the way (mkdir would say "File exists").
    """
    folder = Path(path).parent
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise OSError(errno.ENOTDIR, "not a folder (a file is in the way)", str(candidate))
            return


def _fills_disk_of(error, temporary):
    """Whether `error` is a "no space left" that names no file (a write or flush) and `temporary`'s
    disk is the full one: then the message may name this output. Nested writers on other disks,
    whose stream the error may have come from, do not claim it."""
    if error.filename is not None or error.errno != errno.ENOSPC:
        return False
    try:
        return os.statvfs(temporary.parent).f_bavail == 0
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary `Path` beside `path`; when the block succeeds it gets the usual
    permissions (mkstemp makes 0600 files) and is renamed onto `path`.

    The folder is created if needed (and removed again, when empty, if the block fails: a failed
    write leaves nothing behind). The temporary file exists (empty) and ends in `path`'s
    suffix, so writers that pick the format from the name (Keras, matplotlib, LiteRT) work; a
    writer may also delete and re-create it. On any exception it is removed and `path` is left
    untouched. An existing `path` must be a regular file: a folder is refused before the block
    runs, and a device, pipe or socket is never replaced. OSErrors about the temporary file,
    and a full disk (when it is this file's), name `path`.

    Raises:
        OSError: with `filename` set to `path` (cli.command prints it as one line).
    """
    path = Path(path)
    if path.is_dir():  # os.replace would refuse it only after all the work
        raise IsADirectoryError(errno.EISDIR, "Is a directory: give a file name", str(path))
    if path.exists() and not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file (a device, pipe or socket): write to a file", str(path))
    check_folder_for(path)
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{_writer()}-", suffix=path.suffix or ".tmp",
                                             dir=path.parent)
    except OSError as error:
        _remove_empty(made)
        raise OSError(error.errno, error.strerror, str(path)) from None
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, default_mode())
        _sync(temporary)  # its data on disk before the name points at it (a power cut, not only a crash)
        os.replace(temporary, path)
    except BaseException as error:
        # Whether the disk is full is asked before the temporary file goes: deleting it frees space.
        ours = isinstance(error, OSError) and (error.filename == str(temporary) or _fills_disk_of(error, temporary))
        with contextlib.suppress(OSError):
            temporary.unlink()
        _remove_empty(made)
        if ours:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    _sync(path.parent)  # and the rename itself


def _remove_empty(folders):
    """Remove `folders` (deepest first) while they are empty: the ones a failed write made."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something else was written there meanwhile
            return


# atomic_path's temporary names: "." + the file's name + "." + the writer (its process id, "@" and
# its host's tag) + "-" + mkstemp's 8 random characters + its suffix (before 2026-12-05 evening there
# was no writer in the name).
_TEMPORARY_NAME = re.compile(
    r"\.(?P<name>.+)\.(?:(?P<pid>[0-9]+)@(?P<host>[0-9a-f]{6})-)?[A-Za-z0-9_]{8}(?P<suffix>\.[^.]+)")


def _host_tag():
    """6 hex characters of the SHA-256 of this machine's name: a process id means something only
    on its own machine (an output folder may be shared over NFS, or with a container)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _writer():
    return f"{os.getpid()}@{_host_tag()}"


def _temporaries(folder):
    """`(path, match)` of the files in `folder` named as `atomic_path` names its temporaries."""
    found = []
    with contextlib.suppress(OSError):
        for path in Path(folder).iterdir():
            match = _TEMPORARY_NAME.fullmatch(path.name)
            if match and path.is_file() and (Path(match["name"]).suffix or ".tmp") == match["suffix"]:
                found.append((path, match))
    return sorted(found, key=lambda pair: pair[0])


def stale_temporaries(folder):
    """The temporary files `atomic_path` left in `folder` when its process was killed (SIGKILL,
    a power cut): hidden, half-written (a `.best.keras.k3x9_a2b.keras` can be hundreds of MB),
    and never renamed. Only names of that shape whose suffix is their file's own are listed."""
    return [path for path, _ in _temporaries(folder)]


def abandoned_temporaries(folder):
    """`stale_temporaries` of `folder` whose writer is gone: named by a process of this machine
    that is not running, or by no process (written before writers were in the names). A writer
    still running (an export into a run directory while it resumes), or one on another machine,
    keeps its file."""
    host = _host_tag()
    return [path for path, match in _temporaries(folder)
            if match["pid"] is None or (match["host"] == host and not _running(int(match["pid"])))]


def _running(pid):
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # none; a number no process can have
        return False
    return True


def orphaned_temporaries(path):
    """The temporary files of `path` (an output such as a submission) that `atomic_path` left when
    its writer was killed: those written on this machine whose process id names no running
    process. A writer still running, one on another machine, or one from before writers were in
    the names, is left alone."""
    path = Path(path)
    host = _host_tag()
    return [found for found, match in _temporaries(path.parent)
            if match["name"] == path.name and match["host"] == host and not _running(int(match["pid"]))]


def _sync(path):
    """fsync a file or folder, where the system allows it (best effort: some file systems and
    platforms refuse to open or sync a folder)."""
    with contextlib.suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def abandoned_staging(folder):
    """The staging folders `staged_folder` left in `folder` when its process was killed: named
    by a process of this machine that is not running."""
    folder = Path(folder)
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(?P<pid>[0-9]+)@(?P<host>[0-9a-f]{{6}})-[A-Za-z0-9_]{{8}}")
    found = []
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_dir() and match["host"] == _host_tag() and not _running(int(match["pid"])):
                found.append(path)
    return sorted(found)


@contextlib.contextmanager
def staged_folder(folder):
    """Yield a hidden temporary folder inside `folder` (created if needed) to write files into.
    When the block succeeds each file moves to its place in `folder` (replacing a file of that
    name); on an exception in the block nothing moves, and an OSError about a file being written
    names its final place. Either way the temporary folder is removed: a failed run leaves
    `folder` as it was, not with some of its files. (Should a rename itself fail, the files moved
    before it stay and the rest are dropped.) Enter it before the outputs that must be complete
    first, so that it moves its files last.
    """
    folder = Path(folder)
    check_folder_for(folder / "file")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    for abandoned in abandoned_staging(folder):  # a killed run's (it stayed in the user's folder for good)
        shutil.rmtree(abandoned, ignore_errors=True)
    # named by its writer, as atomic_path's temporaries; same file system: renames
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{_writer()}-", dir=folder))
    try:
        yield staging
        for file in sorted(path for path in staging.rglob("*") if path.is_file()):
            target = folder / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        inside = isinstance(error, OSError) and isinstance(error.filename, str) and \
            Path(error.filename).is_relative_to(staging)
        if inside:
            final = folder / Path(error.filename).relative_to(staging)
            raise OSError(error.errno, error.strerror, str(final)) from None
        raise
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(path, mode="w", **open_kwargs):
    """Yield an open file (`open(temporary, mode, **open_kwargs)`) that replaces `path` when the
    block succeeds. Text modes default to UTF-8."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file: mode must start with 'w'. Received: {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as temporary:
        with open(temporary, mode, **open_kwargs) as stream:
            yield stream


@contextlib.contextmanager
def atomic_text(path, newline=""):
    """`atomic_open(path, "w")` for UTF-8 text, gzip-compressed when the name ends in `.gz`
    (level 6; the gzip header names the file without `.gz`, not the temporary file)."""
    path = Path(path)
    if path.suffix.lower() != ".gz":
        with atomic_open(path, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
        return
    with atomic_path(path) as temporary, open(temporary, "wb") as raw, \
            gzip.GzipFile(filename=path.name[:-len(".gz")], mode="wb", fileobj=raw, compresslevel=6) as compressed, \
            io.TextIOWrapper(compressed, encoding="utf-8", newline=newline) as stream:
        yield stream


def write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically. Returns the path."""
    with atomic_open(path) as stream:
        stream.write(text)
    return Path(path)


def read_json_object(path):
    """A JSON file holding one object, as a dict.

    Raises:
        FerDataError: naming the file, when it cannot be read, is not UTF-8 JSON or not an object.
    """
    from keras_fer.errors import FerDataError

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise FerDataError(f"cannot read it ({error.strerror or error})", path) from None
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as error:  # also UnicodeDecodeError
        raise FerDataError(f"not valid JSON ({error})", path) from None
    if not isinstance(value, dict):
        raise FerDataError("expected a JSON object", path)
    return value


def write_json(path, value, sort_keys=True):
    """Write `value` as indented JSON (non-JSON values as `str`) and a newline, atomically.
    `sort_keys=False` keeps the dicts' own order. Returns the path."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys, default=str) + "\n")


def file_sha256(path):
    """The SHA-256 of a file, in hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_not_inside(outputs, folder, what="the data folder"):
    """Refuse outputs inside an image folder that is an input (or the folder itself): they would
    replace its images, or join them as data the next time it is read.

    Raises:
        FerOptionError: naming the option and the path.
    """
    from keras_fer.errors import FerOptionError

    if folder is None or not Path(folder).is_dir():
        return
    folder = Path(folder).resolve()
    for option, path in outputs:
        if path is not None and Path(path).resolve().is_relative_to(folder):  # the folder itself too
            raise FerOptionError(f"{option} {path} is inside {what} {folder}: write it elsewhere")


def same_file(first, second):
    """Whether two paths name one file: equal once resolved (symbolic links, `..`), or, when both
    exist, the same file on disk (hard links, case-insensitive file systems)."""
    first, second = Path(first), Path(second)
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return False


def first_repeat(paths):
    """`(index, earlier index)` of the first path that names the same file as an earlier one
    (`same_file`: another spelling, a link), or None when every path is distinct."""
    for index, path in enumerate(paths):
        earlier = next((i for i in range(index) if same_file(paths[i], path)), None)
        if earlier is not None:
            return index, earlier
    return None


def check_not_input(outputs, sources, what="the input"):
    """Refuse outputs that would replace a file they are made from, before any work starts.

    Args:
        outputs: `(option, path)` pairs, such as `("--out", "submission.csv")`; `None` paths are
            skipped.
        sources: the input file, or a list of them (a folder's images, the models, ...).
        what: how the message names the input.

    Raises:
        FerOptionError: naming the option and the path, e.g. "--out test.csv would overwrite the
            input".
    """
    from keras_fer.errors import FerOptionError

    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    resolved = {Path(source).resolve() for source in sources}
    for option, path in outputs:
        if path is None:
            continue
        target = Path(path).resolve()
        # A hard link (or another spelling on a case-insensitive disk) is only seen if it exists.
        if target in resolved or (target.exists() and any(same_file(target, source) for source in sources)):
            raise FerOptionError(f"{option} {path} would overwrite {what}")
