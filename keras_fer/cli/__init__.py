"""Command-line front ends. Library code raises; only this package prints errors and exits."""

import argparse
import contextlib
import functools
import os
import signal
import sys
import threading

from keras_fer.errors import FerError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like the package's own errors: not the whole usage
    block followed by "prog: error: ..." on a bad option. A `prog` of a script (`train.py`) reads
    as the console script it was run as (`fer-train`), in usage lines and errors."""

    def __init__(self, *args, prog=None, **kwargs):
        invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if prog and prog.endswith(".py") and invoked == "fer-" + prog[:-3]:
            prog = invoked
        super().__init__(*args, prog=prog, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def quiet_tensorflow():
    """Silence TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow_quietly():
    """Import Keras and TensorFlow with their native start-up lines silenced (they write
    straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says) and register keras-fer's
    layers. Commands call it once they know they need TensorFlow, so `--help` stays instant."""
    from keras_fer.loading import import_keras

    import_keras()


def progress_bar(unit, enabled=True, **options):
    """A tqdm bar on stderr, shown only on a terminal (and when `enabled`), gone when done."""
    from tqdm import tqdm

    return tqdm(unit=unit, disable=not (enabled and sys.stderr.isatty()), file=sys.stderr, dynamic_ncols=True,
                leave=False, **options)


def counting_bar(unit, enabled=True):
    """A factory `(total, description) -> update(done)` of `progress_bar`s that take the count
    done so far (not the increment) and close when it reaches `total`."""

    def start(total, description):
        bar = progress_bar(unit, enabled=enabled, total=total, desc=description)

        def update(done):
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
        return update
    return start


def seed_value(text):
    """An argparse type for random seeds: an integer in [0, 2**32), as Keras and NumPy take."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed. Received: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**32). Received: {text!r}")
    return value


def describe_os_error(error):
    """`FILE: reason` for an OSError. A failed rename names its destination (`filename2`), the
    file the user asked for, rather than the temporary file being renamed."""
    name = error.filename2 if error.filename2 is not None else error.filename
    reason = error.strerror or str(error)
    return f"{name}: {reason}" if name not in (None, "") else reason


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, a container stopping), raised like Ctrl-C so that what
    cleans up after Ctrl-C (temporary files, a training run's finished epochs) runs for it too."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit_code(error):
    """The shell's exit code for an interrupted command: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(error, Terminated) else 130


def stdout_gone(go_on=False):
    """Point stdout's descriptor at /dev/null once its reader has gone (`| head`, or a `| tee`
    killed by the same Ctrl-C), for what flushes at exit; with `go_on`, `sys.stdout` too, for
    the prints of a command that carries on."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if go_on:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of the process


def command(function):
    """Wrap a CLI `main(argv=None) -> int`: package errors become one line on stderr and exit 2,
    Ctrl-C exits 130 and SIGTERM 143 (after the same clean-up), a missing file exits 2 with its
    name, any other OSError (permission denied, a folder where a file should be, a read-only or
    full disk) exits 2 with the file and the reason; never a traceback for bad input."""

    @functools.wraps(function)
    def wrapper(argv=None):
        quiet_tensorflow()
        try:
            with _sigterm_as_interrupt():
                return function(argv) or 0
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `... | head`: the reader left; say nothing more
            stdout_gone()
            return 1
        except FileNotFoundError as error:
            print(f"error: {error.filename or error}: no such file or folder", file=sys.stderr)
            return 2
        except OSError as error:
            print(f"error: {describe_os_error(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as error:
            print("terminated" if isinstance(error, Terminated) else "interrupted", file=sys.stderr)
            return interrupted_exit_code(error)

    return wrapper
