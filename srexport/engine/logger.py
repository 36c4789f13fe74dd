"""One logger per TensorRT bindings module, kept for the process: TensorRT wants a single logger,
and srexport needs its messages. Errors go into the raised SRExportError (`errors_since`), warnings to
Python's logging (printed on stderr by default), and the builder's memory report is read back from it."""

from __future__ import annotations

import collections
import logging
import re
import threading

_PY_LOG = logging.getLogger("srexport.tensorrt")
_LOGGERS: dict[int, object] = {}  # by id of the bindings module
_LOCK = threading.Lock()
KEEP = 4000  # messages kept: a verbose DRCN build logs about a thousand


def logger_for(trt):
    """The process's logger for this bindings module (created on first use)."""
    with _LOCK:
        if id(trt) not in _LOGGERS:
            _LOGGERS[id(trt)] = _make_logger(trt)
        return _LOGGERS[id(trt)]


def _make_logger(trt):
    errors = {trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR}

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            super().__init__()
            self.messages = collections.deque(maxlen=KEEP)  # (serial, is_error, text)
            self.serial = 0

        def log(self, severity, msg):
            self.serial += 1
            is_error = severity in errors
            if is_error or severity != trt.ILogger.VERBOSE:
                self.messages.append((self.serial, is_error, str(msg)))
            if severity == trt.ILogger.WARNING:
                _PY_LOG.warning("TensorRT: %s", msg)

        def mark(self) -> int:
            return self.serial

        def since(self, mark: int) -> list[tuple[bool, str]]:
            return [(e, m) for s, e, m in self.messages if s > mark]

    return CapturingLogger()


def errors_since(logger, mark: int) -> str:
    """TensorRT's error messages since `mark`, joined on one line ("" if none)."""
    return " | ".join(" ".join(m.split()) for is_error, m in logger.since(mark) if is_error)


_ACTIVATION = re.compile(r"Total Activation Memory:\s*(\d+)\s*bytes")


def activation_bytes_since(logger, mark: int) -> int | None:
    """The activation memory the builder reported for its last build since `mark`, if it did."""
    found = [int(m[1]) for _, text in logger.since(mark) for m in [_ACTIVATION.search(text)] if m]
    return found[-1] if found else None
