"""Console logging for the scripts: progress and metrics, not library chatter.

Orbax logs several INFO lines per array per checkpoint; this keeps its warnings and
errors and drops its INFO lines, so a run's log reads as steps, metrics and events.
"""

import logging as py_logging

from absl import logging

_CHATTY = ("/orbax/", "/jax/_src/", "/grain/")


class _DropLibraryInfo(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno > py_logging.INFO or not any(s in record.pathname for s in _CHATTY)


def quiet_libraries() -> None:
    logging.get_absl_handler().addFilter(_DropLibraryInfo())
