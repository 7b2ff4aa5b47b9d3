import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from keras_fer import files
from keras_fer.cli import describe_os_error
from keras_fer.errors import FerOptionError


class Crash(Exception):
    pass


def normal_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_success_replaces_the_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with files.atomic_open(target) as stream:
        stream.write("new\n")
        assert target.read_text() == "old\n"  # not visible before the block ends
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_open"])
def test_crash_leaves_old_file_and_no_temporary(tmp_path, writer):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(Crash):
        if writer == "atomic_path":
            with files.atomic_path(target) as temporary:
                temporary.write_text("half")
                raise Crash
        else:
            with files.atomic_open(target) as stream:
                stream.write("half")
                raise Crash
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_crash_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(Crash):
        with files.atomic_open(tmp_path / "new.bin", "wb") as stream:
            stream.write(b"x")
            raise Crash
    assert not list(tmp_path.iterdir())
    # Folders made for it go too (predict.py --out new/sub/p.csv left new/sub/ behind a bad row),
    # but not one that held something, or gained something meanwhile.
    with pytest.raises(Crash):
        with files.atomic_open(tmp_path / "new" / "sub" / "p.csv", "w"):
            raise Crash
    assert not list(tmp_path.iterdir())
    with pytest.raises(Crash):
        with files.atomic_open(tmp_path / "new" / "sub" / "p.csv", "w"):
            files.write_text(tmp_path / "new" / "beside.txt", "kept")
            raise Crash
    assert [path.name for path in tmp_path.rglob("*")] == ["new", "beside.txt"]
    files.write_text(tmp_path / "new" / "sub" / "p.csv", "written")  # success keeps what it made
    assert (tmp_path / "new" / "sub" / "p.csv").read_text() == "written"


def test_temporary_is_beside_the_target_with_its_suffix(tmp_path):
    target = tmp_path / "sub" / "dir" / "model.keras"
    with files.atomic_path(target) as temporary:
        assert temporary.parent == target.parent  # the folder was created
        assert temporary.name.startswith(".") and temporary.suffix == ".keras"
        temporary.write_bytes(b"zip")
    assert target.read_bytes() == b"zip"
    assert not temporary.exists()


def test_permissions_are_normal_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        for write in (lambda p: files.write_text(p, "x"), lambda p: files.write_json(p, {})):
            target = tmp_path / f"f{len(list(tmp_path.iterdir()))}"
            write(target)
            assert stat.S_IMODE(os.stat(target).st_mode) == 0o644 == normal_mode()
    finally:
        os.umask(old)


def test_write_json_format(tmp_path):
    target = tmp_path / "a.json"
    files.write_json(target, {"b": 1, "a": tmp_path})
    text = target.read_text()
    assert text == json.dumps({"a": str(tmp_path), "b": 1}, indent=2) + "\n"
    files.write_json(target, {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(target.read_text())) == ["b", "a"]


def test_atomic_open_refuses_read_and_append_modes(tmp_path):
    for mode in ("r", "a", "r+"):
        with pytest.raises(ValueError, match="mode"):
            with files.atomic_open(tmp_path / "x", mode):
                pass
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "make, reason",
    [(lambda p: p.write_bytes(b'{"a": 1,}'), "not valid JSON"),
     (lambda p: p.write_bytes(b"\xff\xfe{}"), "not valid JSON"),
     (lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
     (lambda p: p.mkdir(), "cannot read it"),
     (lambda p: None, "cannot read it")],
    ids=["syntax", "not-utf8", "list", "folder", "missing"],
)
def test_read_json_object_names_the_file_and_the_fault(tmp_path, make, reason):
    from keras_fer.errors import FerDataError

    path = tmp_path / "config.json"
    make(path)
    with pytest.raises(FerDataError) as caught:
        files.read_json_object(path)
    assert str(caught.value).startswith(f"{path}: {reason}") and caught.value.reason.startswith(reason)
    assert "\n" not in str(caught.value)


def test_read_json_object_reads_an_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"options": {"seed": 3}, "name": "\u00e9"}), encoding="utf-8")
    assert files.read_json_object(path) == {"options": {"seed": 3}, "name": "\u00e9"}


def test_same_file_sees_through_links_and_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "input.csv").write_text("label,feature\n")
    os.link(tmp_path / "input.csv", tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(tmp_path / "input.csv")
    (tmp_path / "other.csv").write_text("label,feature\n")
    monkeypatch.chdir(tmp_path)
    for name in ("input.csv", "./sub/../input.csv", "hard.csv", "soft.csv", tmp_path / "input.csv"):
        assert files.same_file(name, tmp_path / "input.csv"), name
    for name in ("other.csv", "missing.csv"):
        assert not files.same_file(name, tmp_path / "input.csv"), name


def test_check_not_input_names_the_option_and_skips_unset_outputs(tmp_path):
    (tmp_path / "input.csv").write_text("id,feature\n")
    os.link(tmp_path / "input.csv", tmp_path / "hard.csv")
    files.check_not_input([("--out", tmp_path / "sub.csv"), ("--annotate", None)], tmp_path / "input.csv")
    with pytest.raises(FerOptionError) as caught:
        files.check_not_input([("--out", tmp_path / "sub.csv"), ("--out-train", tmp_path / "hard.csv")],
                              tmp_path / "input.csv", "the input video")
    assert str(caught.value) == f"--out-train {tmp_path / 'hard.csv'} would overwrite the input video"


def test_a_device_pipe_or_socket_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file") as caught:
        with files.atomic_open(fifo) as stream:
            stream.write("x")
    assert caught.value.filename == str(fifo) and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.csv"]


def test_a_folder_is_refused_before_the_work_not_after(tmp_path):
    (tmp_path / "out.csv").mkdir()
    ran = []
    with pytest.raises(IsADirectoryError, match="give a file name") as caught:
        with files.atomic_text(tmp_path / "out.csv") as stream:
            ran.append(True)  # a whole prediction ran here before os.replace refused the folder
            stream.write("x")
    assert not ran and caught.value.filename == str(tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize("where", ["temporary", "none", "mkstemp"])
def test_write_errors_name_the_output_not_the_temporary_file(tmp_path, monkeypatch, where):
    target = tmp_path / "out" / "sub.csv"
    monkeypatch.setattr(files.os, "statvfs", lambda path: os.statvfs_result((4096,) * 3 + (0,) * 7))  # a full disk
    if where == "mkstemp":  # a read-only folder
        def refuse(*args, dir=None, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, ".sub.csv.abc123.csv"))
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as caught:
        with files.atomic_path(target) as temporary:
            if where == "temporary":
                raise OSError(errno.EROFS, "Read-only file system", str(temporary))
            raise OSError(errno.ENOSPC, "No space left on device")  # write() names no file
    assert caught.value.filename == str(target)
    assert describe_os_error(caught.value) == f"{target}: {caught.value.strerror}"
    assert not target.exists() and not target.parent.exists()  # the folder made for it is gone too


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path, capsys):
    import signal
    import time

    from keras_fer.cli import command

    before = signal.getsignal(signal.SIGTERM)

    @command
    def main(argv=None):
        with files.atomic_open(tmp_path / "out.csv") as stream:
            stream.write("half of it")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler interrupts this
        return 0

    assert main() == 143
    assert capsys.readouterr().err == "terminated\n"
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_full_disk_is_named_though_removing_the_temporary_file_frees_space(tmp_path, monkeypatch):
    # The disk was full only while the half-written temporary file held its blocks: asked after
    # removing it, the check found room, and the error ("No space left on device") named no file.
    target = tmp_path / "run" / "best.keras"

    def statvfs(path):
        full = any(name.name.startswith(".best.keras.") for name in target.parent.iterdir())
        return os.statvfs_result((4096,) * 3 + (0 if full else 1144,) * 7)

    monkeypatch.setattr(files.os, "statvfs", statvfs)
    with pytest.raises(OSError) as caught:
        with files.atomic_path(target) as temporary:
            temporary.write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target) and not target.parent.exists()


def test_atomic_writes_sync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    # A process crash was covered; a power cut could leave a renamed but empty best.keras.
    synced, real_fsync, real_replace = [], os.fsync, os.replace
    names = {}
    real_open = os.open

    def tracking_open(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        names[handle] = Path(path)
        return handle

    monkeypatch.setattr(files.os, "open", tracking_open)
    monkeypatch.setattr(files.os, "fsync", lambda handle: (synced.append(names[handle]), real_fsync(handle)))
    monkeypatch.setattr(files.os, "replace", lambda a, b: (synced.append("replace"), real_replace(a, b)))
    with files.atomic_open(tmp_path / "state.json") as stream:
        stream.write("{}")
    assert len(synced) == 3 and synced[0].name.startswith(".state.json.")
    assert synced[1:] == ["replace", tmp_path] and (tmp_path / "state.json").read_text() == "{}"


def test_a_full_disk_is_named_by_the_writer_on_that_disk(tmp_path, monkeypatch):
    """Nested writers: a write that names no file is claimed only by a writer whose disk is full."""
    full, roomy = tmp_path / "full", tmp_path / "roomy"
    monkeypatch.setattr(files.os, "statvfs", lambda path: os.statvfs_result(
        (4096,) * 3 + (0 if Path(path).is_relative_to(full) else 1000,) * 7))
    with pytest.raises(OSError) as caught:
        with files.atomic_open(full / "faces.csv") as outer, files.atomic_path(roomy / "clip.mp4"):
            outer.write("x")
            raise OSError(errno.ENOSPC, "No space left on device")  # the outer stream's flush
    assert caught.value.filename == str(full / "faces.csv")
    assert not (full / "faces.csv").exists() and not (roomy / "clip.mp4").exists()


def test_a_killed_runs_staging_folder_is_cleared_by_the_next_one(tmp_path):
    # A killed --annotate run left annot/.annot.qpdl2ay0/ with its half-run images for good.
    import signal
    import subprocess
    import sys

    annot = tmp_path / "annot"
    code = ("import os, signal\nfrom keras_fer import files\n"
            f"with files.staged_folder({str(annot)!r}) as staging:\n"
            "    (staging / 'a.jpg').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.Popen([sys.executable, "-c", code]).wait() == -signal.SIGKILL
    [left] = files.abandoned_staging(annot)
    assert (left / "a.jpg").read_bytes() == b"half"
    with files.staged_folder(annot) as staging:
        assert files.abandoned_staging(annot) == [] and not left.exists()
        (staging / "b.jpg").write_bytes(b"whole")
        assert files.abandoned_staging(annot) == []  # a running writer's is not abandoned
    assert sorted(path.name for path in annot.iterdir()) == ["b.jpg"]


def test_staged_folder_moves_files_only_when_the_block_succeeds(tmp_path):
    folder = tmp_path / "annotated"
    with pytest.raises(OSError) as caught:
        with files.staged_folder(folder) as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "a.png").write_bytes(b"a")
            raise OSError(errno.EIO, "Input/output error", str(staging / "sub" / "b.png"))
    assert caught.value.filename == str(folder / "sub" / "b.png")  # its final name, not the hidden one
    assert not folder.exists()  # made by the block, removed with it
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with files.staged_folder(folder) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.png").write_bytes(b"a")
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) == ["keep.txt", "sub", "sub/a.png"]


def test_a_killed_writers_temporary_is_found_by_its_process_id_and_a_live_ones_is_not(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "submission.csv"
    code = ("import os, signal, sys\nfrom keras_fer import files\n"
            f"with files.atomic_path({str(target)!r}) as temporary:\n"
            "    temporary.write_text('id,label\\n0,')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.Popen([sys.executable, "-c", code])
    assert killed.wait() == -signal.SIGKILL
    [left] = files.stale_temporaries(tmp_path)  # half-written, never renamed
    assert left.read_text() == "id,label\n0," and not target.exists()
    assert left.name.startswith(f".submission.csv.{killed.pid}@{files._host_tag()}-")  # named by its writer
    with files.atomic_path(target) as temporary:  # a writer still running: its file stays
        temporary.write_text("mine")
        assert files.orphaned_temporaries(target) == [left]
        assert files.orphaned_temporaries(tmp_path / "other.csv") == []  # another output's: not this one's
    old_style = tmp_path / ".submission.csv.k3x9_a2b.csv"  # before process ids: nobody can tell whose
    old_style.write_text("")
    other_host = "000000" if files._host_tag() != "000000" else "111111"
    elsewhere = tmp_path / f".submission.csv.{killed.pid}@{other_host}-abcdefgh.csv"
    elsewhere.write_text("")  # written on another machine sharing the folder: its process ids are not ours
    assert files.orphaned_temporaries(target) == [left]
    assert set(files.stale_temporaries(tmp_path)) == {left, old_style, elsewhere}
    # What a resumed run clears from its folder: not a running writer's (an export beside it), nor another machine's.
    with files.atomic_path(tmp_path / "best-inference.keras") as running:
        running.write_text("exporting")
        assert set(files.abandoned_temporaries(tmp_path)) == {left, old_style}


@pytest.mark.parametrize("items, limit, expected", [
    ([], 3, ""), (["a"], 3, "a"), (["a", "b", "c"], 3, "a, b, c"), (["a", "b", "c", "d"], 3, "a, b, c, ..."),
    ([Path("x/1.gif"), 2], 1, "x/1.gif, ..."),
])
def test_messages_list_the_first_items_and_say_when_there_are_more(items, limit, expected):
    from keras_fer.errors import short_list

    assert short_list(items, limit) == expected
