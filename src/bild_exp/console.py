"""Library output off the terminal: the entry points show the project's own progress and
messages; what libraries print through ``warnings`` or ``logging`` goes to the run's log file.

Hydra's job log (``<results_dir>/.hydra/<time>/<job>.log``) is that file for the Hydra entry
points (sweep, bench, train); ``bild_exp.paper`` names its own. ``BILD_DEBUG=1`` leaves
everything on the terminal. Output a library writes straight to ``sys.stderr`` (not through
``warnings`` or ``logging``) is not caught here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bild_exp.errors import debugging

log = logging.getLogger(__name__)

# Top-level packages whose loggers are sent to the log file ("py.warnings" is where
# logging.captureWarnings sends every warnings.warn).
LIBRARY_PACKAGES = (
    "py.warnings",
    "torch",
    "transformers",
    "datasets",
    "huggingface_hub",
    "accelerate",
    "absl",
    "wandb",
    "hydra",
    "matplotlib",
    "PIL",
    "fsspec",
    "filelock",
    "urllib3",
    "httpx",
    "gguf",
    "sacrebleu",
    "rouge_score",
)


class FolderCreatingFileHandler(logging.FileHandler):
    """A log file opened on its first record, creating its folder then (a run refused before
    it wrote anything leaves no folder behind)."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class ForwardingHandler(logging.Handler):
    """Passes every record to the target handlers, counting warnings and errors."""

    def __init__(self, targets: list[logging.Handler]) -> None:
        super().__init__()
        self.targets = targets
        self.n_warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n_warnings += record.levelno >= logging.WARNING
        for target in self.targets:
            target.handle(record)


def library_loggers() -> list[logging.Logger]:
    """Each library's top-level logger and every existing child with handlers of its own
    (torch's dynamo/inductor loggers, transformers' library root)."""
    loggers = [logging.getLogger(name) for name in LIBRARY_PACKAGES]
    for name, candidate in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(candidate, logging.Logger)
            and name.startswith(tuple(f"{package}." for package in LIBRARY_PACKAGES))
            and candidate.handlers
        ):
            loggers.append(candidate)
    return loggers


def job_log_handlers() -> list[logging.Handler]:
    """The root logger's file handlers: Hydra's job log when Hydra configured logging."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


@contextmanager
def library_output_to_log(fallback_log: Path | None = None) -> Iterator[None]:
    """Within the block, library warnings and log records go to the job log (or
    ``fallback_log`` when there is none, or nowhere when neither exists); restored after.
    On a normal exit one line on the project's logger says how many went there."""
    if debugging():
        yield
        return
    handlers = job_log_handlers()
    own_handler = None
    if not handlers and fallback_log is not None:
        own_handler = FolderCreatingFileHandler(fallback_log, delay=True)
        own_handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
        )
        handlers = [own_handler]
    forward = ForwardingHandler(handlers)
    saved = []
    for logger in library_loggers():
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [forward]
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield
        if forward.n_warnings and handlers:
            where = getattr(handlers[0], "baseFilename", "the job log")
            log.info("%d library warning(s) written to %s", forward.n_warnings, where)
    finally:
        logging.captureWarnings(False)
        for logger, old_handlers, propagate in saved:
            logger.handlers = old_handlers
            logger.propagate = propagate
        if own_handler is not None:
            own_handler.close()
