"""Facial expressions in a video: the faces of every Nth frame classified, one CSV row per face,
a timeline of the expressions, and optionally an annotated copy of the video.

Frames are read with OpenCV (its FFmpeg back end: .mp4, .avi, .mov, .mkv, .webm, ...), faces
found and cropped as in photos (`keras_fer.faces`), and the crops of several frames classified
in one batch.

Example:
>>> from keras_fer import inference, video
>>> predictors = [inference.load_predictor("runs/cnn4")]  # doctest: +SKIP
>>> result = video.predict_video("clip.mp4", predictors, "clip_faces.csv", every=5)  # doctest: +SKIP
>>> result.timeline.shape  # (analysed frames, 7): the largest face's probabilities  # doctest: +SKIP
"""

import contextlib
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np

from keras_fer import faces as face_tools
from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.errors import FerDataError, FerOptionError, check_integer
from keras_fer.files import atomic_path, atomic_text, check_not_input, same_file

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
HEADER = ["frame", "time_s", "face", "x", "y", "w", "h", "label", "class", "confidence"]
# Frames held at once while their faces wait for one batched prediction (with --annotate every
# frame in between is held too, to be drawn with the boxes of the frame analysed before it).
BUFFERED_FRAMES = 64
# ... and at most this many bytes of them: 64 full-HD frames held 400 MB (4K: 1.6 GB).
BUFFERED_BYTES = 64 * 2**20


def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_camera(source):
    """True for a camera index (an int: 0 is the first camera, /dev/video0 on Linux)."""
    return isinstance(source, int) and not isinstance(source, bool)


def source_name(source):
    """How messages name a video source: the file's path, or `camera N`."""
    return f"camera {source}" if is_camera(source) else str(source)


@dataclasses.dataclass
class VideoResult:
    """What `predict_video` found.

    Attributes:
        out: the CSV written.
        frames: frames read from the video; analysed: how many of them were classified.
        faces: faces found in the analysed frames.
        fps: the video's frame rate (as its container states it; 0 when unknown).
        times: `(analysed,)` seconds of each analysed frame.
        timeline: `(analysed, 7)` probabilities of each analysed frame's largest face (NaN
            rows for frames without a face).
        annotated: the annotated copy of the video, if one was asked for.
        stopped: True when Ctrl-C (a camera) or q in the window (`show`) ended the reading.
    """

    out: Path
    frames: int
    analysed: int
    faces: int
    fps: float
    times: np.ndarray
    timeline: np.ndarray
    annotated: Path = None
    stopped: bool = False

    def dominant_shares(self):
        """Share of the analysed frames with a face in which each class is the top one, `(7,)`."""
        seen = ~np.isnan(self.timeline).any(axis=1)
        if not seen.any():
            return np.zeros(NUM_CLASSES)
        return np.bincount(self.timeline[seen].argmax(axis=1), minlength=NUM_CLASSES) / seen.sum()


# The first bytes of the image formats OpenCV reads: FFmpeg opens such a file named .mp4 as a
# one-frame "video" (its image2 demuxer), which would be analysed as a video of one frame.
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
                    (b"RIFF", "WebP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"),
                    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JP2"), (b"\xffO\xffQ", "JP2"))
PNM_NAMES = {b"1": "PBM", b"2": "PGM", b"3": "PPM", b"4": "PBM", b"5": "PGM", b"6": "PPM"}


def _image_format(path):
    """The image format whose signature starts the file `path` (None for any other file)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head.startswith(b"RIFF") and head[8:12] != b"WEBP":  # RIFF also holds AVI
        return None
    if head[:1] == b"P" and head[1:2] in PNM_NAMES and head[2:3].isspace():  # P1-P6 and a blank: netpbm
        return PNM_NAMES[head[1:2]]
    return next((name for signature, name in IMAGE_SIGNATURES if head.startswith(signature)), None)


def open_video(path):
    """`(capture, fps, frame count)` of a video file or a camera (an int index); the count is the
    container's claim (0 if none, and for a camera). The caller releases the capture.

    Raises:
        FerDataError: naming the file or camera, when it is missing or OpenCV cannot open it.
    """
    import cv2

    from keras_fer.loading import quiet_native_stderr

    if is_camera(path):
        with quiet_native_stderr():  # V4L2's "can't open camera by index" goes straight to stderr
            capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise FerDataError("cannot be opened (no such camera, no permission to use it, or it is in use)",
                               source_name(path))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return capture, (fps if np.isfinite(fps) and fps > 0 else 0.0), 0
    path = Path(path)
    if not path.is_file():
        raise FerDataError("no such video file", path)
    image = _image_format(path)
    if image is not None:
        raise FerDataError(f"a {image} image, not a video: give it its image extension (.{image.lower()})", path)
    with quiet_native_stderr():  # FFmpeg writes its complaints about a bad file straight to stderr
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FerDataError("unreadable video (corrupt, or a format OpenCV cannot decode)", path)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(max(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0, 0))
    return capture, (fps if np.isfinite(fps) and fps > 0 else 0.0), count


def annotated_path(path, annotate):
    """Where `--annotate DIR` puts the copy of the video `path`: `DIR/NAME.mp4` (`DIR/cameraN.mp4`
    for camera N)."""
    return Path(annotate) / (f"camera{path}.mp4" if is_camera(path) else f"{Path(path).stem}.mp4")


def _check_outputs(path, out, annotate):
    """Refuse outputs that are the video itself; returns the annotated copy's path (or None)."""
    annotated = annotated_path(path, annotate) if annotate is not None else None
    if not is_camera(path):
        check_not_input((("--out", out), ("--annotate", annotated)), path, "the input video")
    if annotated is not None and out is not None and same_file(annotated, out):
        raise FerOptionError(f"--out {out} is where --annotate writes the annotated video: choose another name")
    return annotated


def check_video(path, out=None, annotate=None):
    """Check, before any model loads, that `path` is a video (or camera index) with a readable
    frame and that the outputs do not overwrite it. Returns the container's frame count (0 if
    unknown).

    Raises:
        FerDataError: for a missing or unreadable video; FerOptionError: for an output that is
            the input.
    """
    path = path if is_camera(path) else Path(path)
    _check_outputs(path, out, annotate)
    capture, _, count = open_video(path)
    try:
        ok, _ = capture.read()
    finally:
        capture.release()
    if not ok:
        raise FerDataError("no frame could be read (empty or corrupt video)" if not is_camera(path)
                           else "opened, but gave no frame", source_name(path))
    return count


@contextlib.contextmanager
def _stop_on_interrupt(enabled, stop):
    """While enabled, Ctrl-C (SIGINT) sets `stop["now"]` instead of raising, so a camera's
    frames are finished and written when the user stops it. Only the main thread can catch
    signals; elsewhere Ctrl-C raises as usual."""
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        stop["now"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def check_window():
    """Check that OpenCV can open a window here, for `show`.

    Raises:
        FerOptionError: for an OpenCV built without window support (`opencv-python-headless`,
            what keras-fer installs) or a machine without a display.
    """
    import os
    import re
    import sys

    import cv2

    from keras_fer.loading import quiet_native_stderr

    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui is not None and gui.group(1).upper() == "NONE":
        import importlib.metadata

        try:  # the wheel's own four-part version (4.14.0.94): cv2's three parts name no wheel
            wheel = importlib.metadata.version("opencv-python-headless")
        except importlib.metadata.PackageNotFoundError:
            wheel = f"{cv2.__version__}.*"
        raise FerOptionError("--show needs OpenCV with window support; this one has none (keras-fer installs "
                             "opencv-python-headless): pip uninstall -y opencv-python-headless && pip install "
                             f'"opencv-python=={wheel}"')
    # Qt, the GUI of OpenCV's Linux wheels, aborts the process when it finds no display.
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FerOptionError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set here")
    try:
        with quiet_native_stderr():  # the GUI's own complaint about a display it cannot open
            cv2.namedWindow("keras-fer", cv2.WINDOW_NORMAL)
            cv2.destroyWindow("keras-fer")
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1]
        raise FerOptionError(f"--show cannot open a window here: {reason}") from None


class _Window:
    """Each frame shown with its boxes and captions (`show`); q or Esc in the window stops."""

    STOP_KEYS = (ord("q"), ord("Q"), 27)

    def __init__(self, title):
        import cv2

        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, canvas):
        """Draw `canvas`; False when the user asked to stop."""
        import cv2

        cv2.imshow(self.title, canvas)
        return (cv2.waitKey(1) & 0xFF) not in self.STOP_KEYS

    def close(self):
        import cv2

        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)


class _AnnotatedWriter:
    """An .mp4 copy of the video with boxes and captions, made once the first frame's size is known.
    `temporary` is written; `target` (the file it will become) is the name errors give.

    A camera's copy is paced by the wall clock: a camera delivers fewer frames than its stated
    rate when classifying cannot keep up, so each frame is repeated until the copy reaches the
    time the next one was read, and the copy plays as long as the recording took."""

    def __init__(self, temporary, target, fps):
        self.temporary, self.target, self.fps, self.writer = temporary, target, fps or 25.0, None
        self.written, self.last = 0, None

    def write(self, canvas, second=None):
        """Append `canvas`, a frame with its boxes and captions drawn (`faces.annotate`). With
        `second` (a camera's: since its first frame), the frame before it is repeated up to that
        time first."""
        import cv2

        if self.writer is None:
            height, width = canvas.shape[:2]
            self.writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (width, height))
            if not self.writer.isOpened():
                raise FerDataError("OpenCV cannot write an .mp4 video here", self.target)
        if second is not None and self.last is not None:
            for _ in range(int(second * self.fps) - self.written):
                self.writer.write(self.last)
                self.written += 1
        # Never dropped: frames come faster than the stated rate only when it is wrong.
        self.writer.write(canvas)
        self.written += 1
        self.last = canvas if second is not None else None

    def close(self):
        if self.writer is not None:
            self.writer.release()


_clock = time.monotonic  # a camera's clock (tests replace it)


def _frame_time(capture, index, fps):
    """Seconds of the frame just read: the container's timestamp, which holds for a variable
    frame rate too, else `index / fps` (NaN when the frame rate is unknown)."""
    import cv2

    msec = capture.get(cv2.CAP_PROP_POS_MSEC)
    if np.isfinite(msec) and (msec > 0 or index == 0) and fps:
        return msec / 1000.0
    return index / fps if fps else float("nan")


def predict_video(path, predictors, out, every=1, tta="none", prior_correction=False, proba=False,
                  min_face=face_tools.DEFAULT_MIN_FACE, detect=True, annotate=None, on_frames=None, detector="haar",
                  max_frames=None, on_analysed=None, show=False):
    """Classify the faces of every `every`-th frame of a video and write them as a CSV.

    Args:
        path: the video file, or a camera index (an int, e.g. 0). A camera is read until
            `max_frames` or Ctrl-C, which ends the recording (the CSV is written); each analysed
            frame is classified as soon as it is read, and its time is the wall clock's since
            the first frame.
        predictors: `inference.Predictor`s (several average their probabilities).
        out: the CSV to write (atomically): `frame,time_s,face,x,y,w,h,label,class,confidence`,
            plus one probability column per class with `proba`; one row per face, and one with
            empty face fields for an analysed frame without a face.
        every: analyse frames 0, every, 2 * every, ...
        tta, prior_correction: as in `inference.predict_proba`.
        min_face: smallest face side the detector looks for, in pixels.
        detect: False to take each whole frame as one face.
        annotate: a folder for an annotated copy, `NAME.mp4` (written atomically), or None.
        on_frames: called with the number of frames read so far (for a progress bar).
        detector: the face detector, `"haar"` or `"mtcnn"` (`faces.detect_faces`).
        max_frames: stop after this many frames (None: to the end, or Ctrl-C for a camera).
        on_analysed: called with `(frame index, seconds, boxes, probabilities)` for each
            analysed frame, once it is classified (a camera's live output).
        show: show every frame with its boxes and captions in a window as it is classified
            (`check_window` says whether OpenCV can); q or Esc in the window ends the reading
            as Ctrl-C ends a camera's, and what was read is written.

    Returns:
        A `VideoResult`.

    Raises:
        FerDataError: for a missing or unreadable video, or one with no readable frame.
    """
    from keras_fer.inference import predict_proba
    from keras_fer.loading import quiet_native_stderr

    every = check_integer(every, "--every", 1, received="every")  # 2.5 ran as 2
    if max_frames is not None:
        max_frames = check_integer(max_frames, "--frames", 1, received="frames")
    if out is None or not str(out).strip():
        raise FerOptionError(f"out must name the CSV file to write. Received: out={out!r}")
    camera = is_camera(path)
    path, out = (path if camera else Path(path)), Path(out)
    annotated = _check_outputs(path, out, annotate)
    started = None  # a camera's first frame, by the monotonic clock
    stop = {"now": False}  # set by Ctrl-C (a camera) or q in the window
    times, timeline = [], []
    counts = {"frames": 0, "faces": 0}
    boxes_now, captions_now = [], []  # the last analysed frame's, drawn on the frames after it

    def flush(held, writer, annotation, window):
        nonlocal boxes_now, captions_now
        searched = iter(face_tools.face_boxes_each([frame for _, _, frame, analyse, _ in held if analyse],
                                                   detect, min_face, detector))
        held = [(index, second, frame, next(searched) if analyse else None, read)
                for index, second, frame, analyse, read in held]
        analysed = [item for item in held if item[3] is not None]
        crops = [face_tools.crop_faces(frame, boxes) for _, _, frame, boxes, _ in analysed]
        crops = np.concatenate(crops) if crops else np.zeros((0, 48, 48, 1), np.uint8)
        probabilities = predict_proba(predictors, crops, tta, prior_correction)
        offset = 0
        for index, second, frame, boxes, read in held:
            if boxes is not None:
                mine = probabilities[offset:offset + len(boxes)]
                offset += len(boxes)
                times.append(second)
                shown_time = f"{second:.3f}" if np.isfinite(second) else ""
                if not boxes:
                    writer.writerow([index, shown_time] + [""] * 8 + ([""] * NUM_CLASSES if proba else []))
                    timeline.append(np.full(NUM_CLASSES, np.nan))
                for number, (box, row) in enumerate(zip(boxes, mine), start=1):
                    label = int(row.argmax())
                    writer.writerow([index, shown_time, number, *box, label, CLASS_NAMES[label], f"{row[label]:.6f}"]
                                    + ([f"{value:.6f}" for value in row] if proba else []))
                if boxes:
                    largest = max(range(len(boxes)), key=lambda i: boxes[i][2] * boxes[i][3])
                    timeline.append(mine[largest])
                if on_analysed is not None:
                    on_analysed(index, second, boxes, mine)
                counts["faces"] += len(boxes)
                boxes_now = boxes
                captions_now = [f"{CLASS_NAMES[int(row.argmax())]} {row.max():.2f}" for row in mine]
            if annotation is not None or window is not None:
                canvas = face_tools.annotate(frame, boxes_now, captions_now)
                if annotation is not None:
                    annotation.write(canvas, read)
                if window is not None and not window.show(canvas):
                    stop["now"] = True

    capture, fps, _ = open_video(path)
    try:
        with atomic_text(out) as stream, (atomic_path(annotated) if annotated is not None
                                            else contextlib.nullcontext()) as temporary:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(HEADER + (list(CLASS_NAMES) if proba else []))
            annotation = _AnnotatedWriter(temporary, annotated, fps) if annotated is not None else None
            window = _Window(f"keras-fer: {Path(str(source_name(path))).name}") if show else None
            every_frame = annotation is not None or window is not None  # drawn, so decoded
            held, held_bytes = [], 0
            try:
                with _stop_on_interrupt(camera, stop):
                    while not stop["now"] and (max_frames is None or counts["frames"] < max_frames):
                        analyse = counts["frames"] % int(every) == 0
                        with quiet_native_stderr():  # FFmpeg's complaints about a damaged frame
                            if analyse or every_frame:
                                ok, frame = capture.read()
                            else:
                                ok, frame = capture.grab(), None
                        if not ok:
                            break
                        index = counts["frames"]
                        counts["frames"] += 1
                        read = None  # a camera frame's time, which paces the annotated copy
                        if camera:
                            now = _clock()
                            started = now if started is None else started
                            read = now - started
                        if analyse:  # its faces are found in `flush`, with the other held frames'
                            second = read if camera else _frame_time(capture, index, fps)
                            held.append((index, second, frame, True, read))
                        elif every_frame:
                            held.append((index, None, frame, False, read))
                        held_bytes += frame.nbytes if frame is not None else 0
                        # A camera's frames, and any shown, are classified as they come: live.
                        live = camera or window is not None
                        if live and analyse or len(held) >= BUFFERED_FRAMES or held_bytes >= BUFFERED_BYTES:
                            flush(held, writer, annotation, window)
                            held, held_bytes = [], 0
                            if on_frames is not None:
                                on_frames(counts["frames"])
                    stopped = stop["now"]
                flush(held, writer, annotation, window)
                if on_frames is not None:
                    on_frames(counts["frames"])
            finally:
                if annotation is not None:
                    annotation.close()
                if window is not None:
                    window.close()
            if counts["frames"] == 0:
                raise FerDataError("no frame could be read (empty or corrupt video)" if not camera
                                   else "gave no frame", source_name(path))
    finally:
        capture.release()
    return VideoResult(
        out=out, frames=counts["frames"], analysed=len(times), faces=counts["faces"], fps=fps,
        times=np.asarray(times, dtype=float), timeline=np.asarray(timeline, dtype=float).reshape(-1, NUM_CLASSES),
        annotated=annotated, stopped=stopped,
    )

