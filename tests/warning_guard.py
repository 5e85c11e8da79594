"""A pytest plugin: a test fails when code of ``bild_exp`` triggers a deprecation warning.

pytest's ``filterwarnings`` matches the module a warning is attributed to, and libraries
attribute their deprecations to their own frames (transformers' ``deprecate_kwarg`` names
``torch.nn.Module.__call__``, not the engine line that passed ``past_key_values=``). So every
``warnings.warn`` of a FutureWarning or DeprecationWarning is checked here for a
``bild_exp`` frame anywhere on the stack: the day a library deprecates something the engine
uses, the test that exercises it fails, naming our line. A warning the active filters
ignore (pyproject's ``filterwarnings``: a library's deprecation of its own internals, raised
whoever calls it) is no offence. Warnings raised from C (torch's ``TORCH_WARN``) do not pass
through ``warnings.warn``; pyproject's ``filterwarnings`` turns those attributed to a
``bild_exp`` module into errors.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from types import FrameType

import pytest

PROJECT_PACKAGE = "bild_exp"
GUARDED = (DeprecationWarning, FutureWarning)


@dataclass(frozen=True)
class Offence:
    category: str
    message: str
    where: str  # the innermost bild_exp frame on the stack: "module:line (function)"

    def __str__(self) -> str:
        return f"{self.category}: {self.message} (triggered from {self.where})"


def project_frame(frame: FrameType | None) -> str | None:
    """The innermost frame of the project's package on the stack, as text, or None."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == PROJECT_PACKAGE or module.startswith(PROJECT_PACKAGE + "."):
            return f"{module}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return None


def ignored_by_filters(text: str, category: type[Warning], module: str, lineno: int) -> bool:
    """Whether the first matching entry of ``warnings.filters`` ignores this warning (the
    matching rule of the ``warnings`` module)."""
    for action, message, filter_category, filter_module, filter_lineno in warnings.filters:
        if (
            (message is None or message.match(text))
            and issubclass(category, filter_category)
            and (filter_module is None or filter_module.match(module))
            and filter_lineno in (0, lineno)
        ):
            return action == "ignore"
    return False


def attributed_frame(caller: FrameType, stacklevel: int) -> FrameType:
    """The frame ``warnings.warn(..., stacklevel)`` called from ``caller`` names."""
    frame = caller
    for _ in range(max(stacklevel, 1) - 1):
        if frame.f_back is None:
            break
        frame = frame.f_back
    return frame


def warning_category(message: object, category: type[Warning] | None) -> type[Warning]:
    if isinstance(message, Warning):
        return type(message)
    return category or UserWarning


class DeprecationGuard:
    """Wraps ``warnings.warn`` for the session; collects the offences of the running test."""

    def __init__(self) -> None:
        self.offences: list[Offence] = []
        self.original_warn = warnings.warn

    def install(self) -> None:
        original = self.original_warn

        def guarded_warn(message, category=None, stacklevel=1, source=None, **kwargs):
            found = warning_category(message, category)
            if issubclass(found, GUARDED):
                caller = sys._getframe(1)
                where = project_frame(caller)
                named = attributed_frame(caller, stacklevel)
                module = named.f_globals.get("__name__", "")
                if where is not None and not ignored_by_filters(
                    str(message), found, module, named.f_lineno
                ):
                    self.offences.append(Offence(found.__name__, str(message), where))
            # one frame deeper than the caller asked: this wrapper is on the stack
            return original(message, category, stacklevel + 1, source, **kwargs)

        warnings.warn = guarded_warn

    def uninstall(self) -> None:
        warnings.warn = self.original_warn

    def take(self) -> list[Offence]:
        offences, self.offences = self.offences, []
        return offences


GUARD = DeprecationGuard()


def pytest_configure(config: pytest.Config) -> None:
    GUARD.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    GUARD.uninstall()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    GUARD.take()  # what fixtures' set-up triggered is reported by the set-up hook below
    result = yield
    report_offences(GUARD.take(), "during the test")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    GUARD.take()
    result = yield
    report_offences(GUARD.take(), "while setting up the test's fixtures")
    return result


def report_offences(offences: list[Offence], when: str) -> None:
    if offences:
        unique = list(dict.fromkeys(str(offence) for offence in offences))
        pytest.fail(
            f"bild_exp triggered {len(offences)} deprecation warning(s) {when}:\n"
            + "\n".join(unique),
            pytrace=False,
        )
