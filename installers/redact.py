"""Last line of defence for secrets: a logging filter that masks every known secret value.

Secrets (SSH keys and passwords, sudo passwords, join tokens, certificate keys) are registered here the
moment kai learns them; every log record that passes a handler carrying this filter is rewritten
with the values masked. Code should still never log a secret — this only catches mistakes.
"""

from __future__ import annotations

import logging
import threading

MASK = "***"
_MIN_LEN = 6  # shorter values would mask ordinary words; real secrets are longer


class Redactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= _MIN_LEN:
                    self._secrets.add(value)
                    # multi-line secrets (PEM keys) may be logged one line at a time
                    for line in value.splitlines():
                        if len(line.strip()) >= 16:
                            self._secrets.add(line.strip())

    def redact(self, text: str) -> str:
        if not self._secrets:
            return text
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


REDACTOR = Redactor()


def install(logger_names: tuple[str, ...] = (
        "", "prefect", "prefect.flow_runs", "prefect.task_runs", "kai", "paramiko",
    )) -> None:
    """Attach the redactor to every handler of the named loggers (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)
        for handler in logger.handlers:
            if REDACTOR not in handler.filters:
                handler.addFilter(REDACTOR)
