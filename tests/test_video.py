"""keras_fer.video and `predict.py VIDEO`: frames read, faces classified, CSV, timeline, annotated copy."""

import csv
import re

import cv2
import numpy as np
import pytest

from keras_fer import inference, video
from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.cli.predict import main
from keras_fer.errors import FerDataError, FerOptionError
from keras_fer.synthetic import generate

from conftest import PRIOR, save_run, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FPS = 10.0


def write_video(path, frames, fps=FPS):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
    writer.release()
    return path


def face_video(path, count=30, size=96):
    faces = generate(14, seed=0).images.pixels[..., 0]
    return write_video(path, [cv2.resize(faces[i % 14], (size, size)) for i in range(count)])


def decoded_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    run = save_run(tmp_path_factory.mktemp("run"), tiny_model(3), PRIOR)
    return [inference.load_predictor(run, backend="keras")]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_nth_frame_is_classified_as_the_crops_of_its_decoded_frame(tmp_path, predictors):
    clip = face_video(tmp_path / "clip.mp4")
    result = video.predict_video(clip, predictors, tmp_path / "faces.csv", every=3, proba=True, detect=False,
                                 annotate=tmp_path / "annotated")
    rows = read_rows(tmp_path / "faces.csv")
    assert (result.frames, result.analysed, result.faces, result.fps) == (30, 10, 10, FPS)
    assert [int(row["frame"]) for row in rows] == list(range(0, 30, 3))
    assert [float(row["time_s"]) for row in rows] == pytest.approx([frame / FPS for frame in range(0, 30, 3)])
    # What the model says of each analysed frame, decoded independently: the same, row by row.
    frames = decoded_frames(clip)
    crops = np.concatenate([video.face_tools.crop_faces(frames[i], [(0, 0, 96, 96)]) for i in range(0, 30, 3)])
    expected = inference.predict_proba(predictors, crops)
    written = np.array([[float(row[name]) for name in CLASS_NAMES] for row in rows])
    np.testing.assert_allclose(written, expected, atol=2e-6)
    np.testing.assert_allclose(result.timeline, expected, atol=1e-6)
    assert [int(row["label"]) for row in rows] == expected.argmax(axis=1).tolist()
    assert [row["class"] for row in rows] == [CLASS_NAMES[i] for i in expected.argmax(axis=1)]
    shares = result.dominant_shares()
    assert shares.sum() == pytest.approx(1.0)
    assert shares.tolist() == (np.bincount(expected.argmax(axis=1), minlength=NUM_CLASSES) / 10).tolist()
    # The annotated copy has every frame (boxes drawn, enlarged to at least 192 pixels).
    assert result.annotated == tmp_path / "annotated" / "clip.mp4"
    copy = decoded_frames(result.annotated)
    assert len(copy) == 30 and copy[0].shape == (192, 192, 3)
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["clip.mp4"]  # no temporary left


def test_frames_without_faces_get_an_empty_row_and_a_gap_in_the_timeline(tmp_path, predictors):
    clip = write_video(tmp_path / "wall.avi", [np.full((120, 160), 128, np.uint8)] * 6)
    result = video.predict_video(clip, predictors, tmp_path / "faces.csv", every=2)
    rows = read_rows(tmp_path / "faces.csv")
    assert [row["frame"] for row in rows] == ["0", "2", "4"]
    assert all(row["face"] == row["label"] == row["class"] == "" for row in rows)
    assert result.faces == 0 and np.isnan(result.timeline).all() and result.timeline.shape == (3, NUM_CLASSES)
    assert not result.dominant_shares().any()


def test_bad_videos_and_options_are_data_errors_with_no_output(tmp_path, predictors):
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 20)
    for path, words in ((tmp_path / "bad.mp4", "unreadable video"), (tmp_path / "missing.mp4", "no such video")):
        with pytest.raises(FerDataError, match=words) as caught:
            video.predict_video(path, predictors, tmp_path / "out.csv")
        assert path.name in str(caught.value)
    for every in (0, 2.5, "x", None):  # 2.5 ran as 2; "x" and None were a ValueError and a TypeError
        with pytest.raises(FerOptionError, match=r"--every must be an integer >= 1\. Received: every="):
            video.predict_video(face_video(tmp_path / "ok.mp4", count=2), predictors, tmp_path / "out.csv",
                                every=every)
    with pytest.raises(FerOptionError, match="out must name the CSV file"):
        video.predict_video(face_video(tmp_path / "ok.mp4", count=2), predictors, None)
    assert not (tmp_path / "out.csv").exists()
    clip = face_video(tmp_path / "clip.mp4", count=2)
    before = clip.read_bytes()
    for option, value, target in (("out", clip, clip), ("annotate", tmp_path, clip)):
        with pytest.raises(FerOptionError, match=f"--{option} {target} would overwrite the input video"):
            video.check_video(clip, **{option: value})
    assert clip.read_bytes() == before


@pytest.mark.parametrize("extension, image", [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".pgm", "PGM"),
                                              (".jp2", "JP2"), (".pbm", "PBM")])
def test_an_image_named_as_a_video_is_refused_and_an_avi_is_not_taken_for_an_image(tmp_path, predictors,
                                                                                     extension, image):
    import cv2

    # FFmpeg's image2 demuxer opened it as a one-frame video, analysed and summarised as one.
    ok, encoded = cv2.imencode(extension, np.full((48, 48), 90, np.uint8))
    (tmp_path / "face.mp4").write_bytes(encoded.tobytes())
    with pytest.raises(FerDataError, match=f"face.mp4: a {image} image, not a video: give it its image extension"):
        video.check_video(tmp_path / "face.mp4")
    with pytest.raises(FerDataError, match=f"a {image} image, not a video"):
        video.predict_video(tmp_path / "face.mp4", predictors, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    # An AVI is a RIFF file too, like WebP: it is still read as a video.
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48), False)
    for _ in range(3):
        writer.write(np.full((48, 48), 90, np.uint8))
    writer.release()
    assert avi.read_bytes()[:4] == b"RIFF" and video.check_video(avi) == 3


def test_predict_cli_on_a_video_writes_csv_timeline_and_summary(tmp_path, capsys):
    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    clip = face_video(tmp_path / "clip.mp4", count=12)
    out = tmp_path / "results" / "clip.v1.csv"
    assert main([str(clip), "--model", str(run), "--backend", "keras", "--no-detect", "--every", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 faces in 3 analysed of 12 frames, 1.2 s at 10 fps" in printed
    assert "top expression of the largest face" in printed
    assert len(read_rows(out)) == 3
    timeline = tmp_path / "results" / "clip.v1_timeline.png"
    assert timeline.read_bytes()[:4] == b"\x89PNG" and f"timeline: {timeline}" in printed
    # Bad input: one line, exit 2, nothing written, before any model is loaded.
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    for argv in ([str(tmp_path / "bad.mp4")], [str(clip), "--every", "0"], [str(clip), "--annotate", str(tmp_path)]):
        assert main([*argv, "--model", str(run), "--backend", "keras", "--out", str(tmp_path / "bad.csv")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "bad.csv").exists()
    # --out where --annotate puts the annotated copy: one of them would be lost.
    assert main([str(clip), "--model", str(run), "--out", str(tmp_path / "copies" / "clip.mp4"),
                 "--annotate", str(tmp_path / "copies")]) == 2
    assert "is where --annotate writes the annotated video" in capsys.readouterr().err
    assert not (tmp_path / "copies").exists()


def fake_cameras(monkeypatch, clip, interrupt_after=None, seconds_per_frame=0.05):
    """cv2.VideoCapture with camera 0 playing `clip` (and, after `interrupt_after` frames, a
    Ctrl-C: SIGINT sent to this process, as the terminal sends it); other cameras absent. The
    camera's clock moves `seconds_per_frame` a frame read, whatever the machine's speed."""
    import itertools
    import os
    import signal

    real = cv2.VideoCapture
    ticks = itertools.count()
    monkeypatch.setattr(video, "_clock", lambda: 1000.0 + next(ticks) * seconds_per_frame)

    class Camera:
        def __init__(self, source, *args):
            self.capture = real(str(clip) if source == 0 else str(clip.parent / "no-such-camera"))
            self.reads = 0

        def read(self):
            self.reads += 1
            if interrupt_after is not None and self.reads == interrupt_after + 1:
                os.kill(os.getpid(), signal.SIGINT)
            return self.capture.read()

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", lambda source, *args: Camera(source) if isinstance(source, int)
                        else real(source, *args))


def test_a_camera_is_read_live_until_frames_or_ctrl_c(tmp_path, capsys, monkeypatch):
    import signal

    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN in a background job
    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    fake_cameras(monkeypatch, face_video(tmp_path / "clip.mp4", count=40))
    out = tmp_path / "cam.csv"
    argv = ["--model", str(run), "--backend", "keras", "--no-detect", "--out", str(out)]
    assert main(["--camera", "--frames", "6", "--every", "2", "--annotate", str(tmp_path / "copies"), *argv]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("frame ")]
    assert [line.split(" (")[0] for line in lines] == ["frame 0", "frame 2", "frame 4"]  # live, one per analysed
    rows = read_rows(out)
    assert [row["frame"] for row in rows] == ["0", "2", "4"]
    for line, row in zip(lines, rows):  # the live line says what the CSV says
        assert f"face 1 {row['class']} {float(row['confidence']):.2f}" in line
    times = [float(row["time_s"]) for row in rows]  # the wall clock since the first frame
    assert times[0] == 0.0 and times == sorted(times)
    assert "3 faces in 3 analysed of 6 frames" in printed and "Ctrl-C" in printed.splitlines()[0]
    assert times == [0.0, 0.1, 0.2]  # its clock: 0.05 s a frame, faster than the clip's 10 fps
    assert len(decoded_frames(tmp_path / "copies" / "camera0.mp4")) == 6  # each frame once
    assert (tmp_path / "cam_timeline.png").read_bytes()[:4] == b"\x89PNG"
    # Ctrl-C during the 10th read: the recording ends with the 10 frames read, all written, exit 0,
    # and Ctrl-C does afterwards what it did before.
    fake_cameras(monkeypatch, tmp_path / "clip.mp4", interrupt_after=9)
    assert main(["--camera", "0", *argv]) == 0
    printed = capsys.readouterr().out
    assert "10 faces in 10 analysed of 10 frames" in printed and "s, stopped by Ctrl-C" in printed
    assert len(read_rows(out)) == 10
    assert signal.getsignal(signal.SIGINT) is before


def test_a_slow_cameras_annotated_copy_plays_as_long_as_the_recording(tmp_path, capsys, monkeypatch):
    # Classifying cannot keep up: a frame read every 0.25 s from a camera stating 10 fps. Each is
    # repeated until the copy reaches the next one's time, so the 6 frames (the last 1.25 s after
    # the first) fill 13 frames of the copy, 1.3 s at 10 fps, where they played in 0.6 s before.
    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    fake_cameras(monkeypatch, face_video(tmp_path / "clip.mp4", count=8), seconds_per_frame=0.25)
    assert main(["--camera", "--frames", "6", "--model", str(run), "--backend", "keras", "--no-detect",
                 "--out", str(tmp_path / "cam.csv"), "--annotate", str(tmp_path / "copies")]) == 0
    frames = decoded_frames(tmp_path / "copies" / "camera0.mp4")
    assert len(frames) == int(1.25 * FPS) + 1 == 13
    # The copy shows the camera's first frame at 0.0 and 0.1 s, its second (read at 0.25 s) from 0.2 s.
    copy = cv2.VideoCapture(str(tmp_path / "copies" / "camera0.mp4"))
    assert copy.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    copy.release()
    differences = [float(np.abs(frames[i].astype(int) - frames[0].astype(int)).mean()) for i in range(4)]
    assert max(differences[:2]) < 1 < min(differences[2:])
    assert [row["time_s"] for row in read_rows(tmp_path / "cam.csv")] == ["0.000", "0.250", "0.500", "0.750",
                                                                           "1.000", "1.250"]


def test_a_camera_recording_is_written_when_its_live_lines_reader_goes(tmp_path, monkeypatch, capsys):
    # `predict.py --camera | tee log`, Ctrl-C: tee died with it, the next live line raised
    # BrokenPipeError inside the CSV's atomic write, and the recording was lost (exit 1).
    import io
    import sys

    class GoneAfterTwoFrames(io.StringIO):
        def write(self, text):
            if "frame 2" in text or self.closed_reader:
                self.closed_reader = True
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

        closed_reader = False

    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    fake_cameras(monkeypatch, face_video(tmp_path / "clip.mp4", count=8))
    monkeypatch.setattr(sys, "stdout", GoneAfterTwoFrames())
    out = tmp_path / "cam.csv"
    assert main(["--camera", "--frames", "6", "--model", str(run), "--backend", "keras", "--no-detect",
                 "--out", str(out)]) == 0
    assert [row["frame"] for row in read_rows(out)] == [str(i) for i in range(6)]
    assert (tmp_path / "cam_timeline.png").exists()


def test_show_draws_each_frame_live_and_q_stops_it(tmp_path, capsys, monkeypatch):
    # A window per frame where OpenCV has one (this machine's headless OpenCV has none: faked).
    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    clip = face_video(tmp_path / "clip.mp4", count=20)
    out = tmp_path / "shown.csv"
    argv = [str(clip), "--model", str(run), "--backend", "keras", "--no-detect", "--every", "2", "--out", str(out)]
    assert main([*argv, "--show"]) == 2  # no window support here: one line, before any model loads
    err = capsys.readouterr().err
    assert err.startswith("error: --show needs OpenCV with window support") and err.count("\n") == 1
    import importlib.metadata

    wheel = importlib.metadata.version("opencv-python-headless")  # four parts: cv2.__version__ names no wheel
    assert f'pip install "opencv-python=={wheel}"' in err and wheel.count(".") == 3 and not out.exists()
    shown = []

    def waitKey(delay):  # noqa: N802 - OpenCV's name
        return ord("q") if len(shown) == 7 else -1

    gui = re.sub(r"GUI:\s*NONE", "GUI: QT5", cv2.getBuildInformation())
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: gui)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([*argv, "--show"]) == 2  # a GUI OpenCV, no display: Qt would abort the process
    assert "--show needs a display, and neither DISPLAY" in capsys.readouterr().err
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "namedWindow", lambda *args: None)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *args: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, canvas: shown.append((title, canvas.copy())))
    monkeypatch.setattr(cv2, "waitKey", waitKey)
    assert main([*argv, "--show"]) == 0
    # Every frame drawn (boxes of the last analysed one), as it comes, until q after the 7th.
    assert len(shown) == 7 and shown[0][0] == "keras-fer: clip.mp4"
    assert shown[0][1].shape[2] == 3 and shown[0][1].dtype == np.uint8  # the annotated colour copy
    rows = read_rows(out)
    assert [row["frame"] for row in rows] == ["0", "2", "4", "6"]
    captured = capsys.readouterr()
    assert "4 faces in 4 analysed of 7 frames, 0.7 s at 10 fps, stopped (q)" in captured.out
    assert "truncated" not in captured.err  # stopped on purpose, not a damaged file


def test_camera_errors_are_one_line_before_any_model_loads(tmp_path, capsys, monkeypatch):
    fake_cameras(monkeypatch, face_video(tmp_path / "clip.mp4", count=3))
    out = tmp_path / "cam.csv"
    for argv, words in ((["--camera", "1"], "camera 1: cannot be opened (no such camera"),
                        (["--camera", "-1"], "--camera takes a camera index >= 0"),
                        (["--camera", "--frames", "0"], "--frames must be a positive integer"),
                        ([str(tmp_path / "clip.mp4"), "--camera"], "--camera reads a camera instead of an input"),
                        ([str(tmp_path / "clip.mp4"), "--camera", "0"], "give one of them"),
                        (["--camera", "--saved-proba", str(out)], "Received: input=0")):
        assert main([*argv, "--model", str(tmp_path / "missing.keras"), "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    assert not out.exists()
    with pytest.raises(FerDataError, match="camera 3: cannot be opened"):
        video.check_video(3)


def test_frames_stops_a_video_early_and_is_refused_for_other_inputs(tmp_path, predictors, capsys):
    clip = face_video(tmp_path / "clip.mp4", count=12)
    result = video.predict_video(clip, predictors, tmp_path / "out.csv", every=2, detect=False, max_frames=5)
    assert (result.frames, result.analysed) == (5, 3) and not result.stopped
    with pytest.raises(FerOptionError, match=r"--frames must be an integer >= 1\. Received: frames=0"):
        video.predict_video(clip, predictors, tmp_path / "out.csv", max_frames=0)
    csv_input = tmp_path / "test.csv"
    csv_input.write_text("id,feature\n0," + " ".join(["1"] * 2304) + "\n")
    assert main([str(csv_input), "--frames", "3", "--out", str(tmp_path / "sub.csv")]) == 2
    assert "--frames is for videos and cameras" in capsys.readouterr().err
    assert main([str(csv_input), "--show", "--out", str(tmp_path / "sub.csv")]) == 2
    assert "--show is for videos and cameras" in capsys.readouterr().err


@pytest.mark.parametrize("cap", ["frames", "bytes"])
def test_annotation_and_timeline_follow_each_frames_faces_across_batches(tmp_path, predictors, monkeypatch, cap):
    # 10 frames: three batches of at most 4, boxes carried between them; held by count, or by
    # bytes (64 full-HD frames held 400 MB)
    if cap == "frames":
        monkeypatch.setattr(video, "BUFFERED_FRAMES", 4)
    else:
        monkeypatch.setattr(video, "BUFFERED_BYTES", 4 * 240 * 240 * 3)
    batches = []
    face_boxes_each = video.face_tools.face_boxes_each
    monkeypatch.setattr(video.face_tools, "face_boxes_each",
                        lambda frames, *args: batches.append(len(frames)) or face_boxes_each(frames, *args))
    frames = [np.full((240, 240), 20 + 20 * i, np.uint8) for i in range(10)]  # frame i: grey 20 + 20 i
    clip = write_video(tmp_path / "steps.mp4", frames)
    plan = {0: [(10, 10, 60, 60), (120, 100, 100, 100)], 3: [(30, 40, 80, 80)], 6: [], 9: [(100, 20, 90, 90)]}
    seen = []

    def fake_detect(image, min_size=30, detector="haar"):
        index = int(round((float(np.mean(image)) - 20) / 20))  # which frame this is, by its grey level
        seen.append(index)
        return plan[index]
    monkeypatch.setattr(video.face_tools, "detect_faces", fake_detect)
    result = video.predict_video(clip, predictors, tmp_path / "faces.csv", every=3, proba=True,
                                 annotate=tmp_path / "annotated")
    assert seen == [0, 3, 6, 9] and (result.frames, result.analysed, result.faces) == (10, 4, 4)
    assert batches == [2, 1, 1]  # frames 0-3 (0 and 3 analysed), 4-7 (6), 8-9 (9)
    rows = read_rows(tmp_path / "faces.csv")
    assert [(row["frame"], row["face"], row["x"]) for row in rows] == [
        ("0", "1", "10"), ("0", "2", "120"), ("3", "1", "30"), ("6", "", ""), ("9", "1", "100")]
    # The timeline holds the largest face of each frame, and a gap for frame 6.
    second_face = [float(rows[1][name]) for name in CLASS_NAMES]
    np.testing.assert_allclose(result.timeline[0], second_face, atol=2e-6)
    assert np.isnan(result.timeline[2]).all() and not np.isnan(result.timeline[[0, 1, 3]]).any()

    copy = decoded_frames(result.annotated)
    assert len(copy) == 10
    levels = [float(np.median(frame[200:, :40])) for frame in copy]  # a corner no box reaches
    assert levels == sorted(levels) and levels[-1] - levels[0] > 150  # every frame, in order

    def green(frame, x, y):
        blue, g, red = (int(v) for v in frame[y, x])
        return g > 150 and g - max(blue, red) > 80

    for index, frame in enumerate(copy):
        drawn = plan[index - index % 3]  # the boxes of the last analysed frame
        for x, y, w, h in [(10, 10, 60, 60), (30, 40, 80, 80), (100, 20, 90, 90)]:
            expected = (x, y, w, h) in drawn
            assert green(frame, x, y + h // 2) == expected, (index, (x, y, w, h))


def test_mtcnn_finds_the_tilted_face_of_every_analysed_frame(tmp_path, predictors):
    from matplotlib import cbook

    portrait = cv2.resize(cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), (256, 300))
    frames = []
    for index in range(6):  # the face turns from 20 to 35 degrees: the cascade finds it in none
        matrix = cv2.getRotationMatrix2D((128, 150), 20 + 3 * index, 1.0)
        frames.append(cv2.warpAffine(portrait, matrix, (256, 300), borderMode=cv2.BORDER_REPLICATE))
    clip = write_video(tmp_path / "tilted.mp4", frames)
    found = {}
    for detector in ("haar", "mtcnn"):
        result = video.predict_video(clip, predictors, tmp_path / f"{detector}.csv", every=2, detector=detector)
        rows = read_rows(tmp_path / f"{detector}.csv")
        assert [row["frame"] for row in rows if row["face"] in ("", "1")] == ["0", "2", "4"]
        found[detector] = (result.faces, [row["w"] for row in rows])
    assert found["haar"] == (0, ["", "", ""])
    assert found["mtcnn"][0] == 3 and all(60 < int(w) < 160 for w in found["mtcnn"][1])


def test_damaged_frames_do_not_print_ffmpeg_lines(tmp_path, predictors, capfd):
    path = tmp_path / "damaged.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for frame in np.random.default_rng(0).integers(0, 256, (20, 96, 96, 3), dtype=np.uint8):
        writer.write(frame)
    writer.release()
    data = bytearray(path.read_bytes())
    for position in range(len(data) // 3, len(data) // 3 + 3000, 7):  # JPEG data of a few frames
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    capfd.readouterr()
    result = video.predict_video(path, predictors, tmp_path / "out.csv", detect=False)
    assert result.frames > 0
    assert "mjpeg" not in capfd.readouterr().err  # FFmpeg writes "[mjpeg @ 0x...] error count: 64" to fd 2


def test_a_truncated_video_is_read_to_its_end_with_a_note(tmp_path, capsys):
    run = save_run(tmp_path / "run", tiny_model(4), PRIOR)
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for face in generate(40, seed=1).images.pixels[..., 0]:
        writer.write(cv2.cvtColor(cv2.resize(face, (96, 96)), cv2.COLOR_GRAY2BGR))
    writer.release()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the header still says 40 frames
    assert main([str(path), "--model", str(run), "--backend", "keras", "--no-detect",
                 "--out", str(tmp_path / "cut.csv")]) == 0
    read = len(read_rows(tmp_path / "cut.csv"))  # one row a frame (no face search)
    assert 0 < read < 39
    assert f"read {read} of the 40 frames its header announces" in capsys.readouterr().err
