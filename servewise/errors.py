"""The one exception tree of servewise.

::

    ServewiseError                 base of everything servewise raises on purpose
    ├── ConfigError                a deployment / search space is invalid (names the field)
    ├── TraceError                 a trace file is malformed (names file and line)
    ├── ArtifactError              an artifact cannot be read (unknown schema, wrong kind)
    ├── UnknownPolicyError         a policy name is not registered (lists the valid names)
    ├── MissingExtraError          an optional dependency is not installed (says what to install)
    ├── ProfileError               a model cannot be profiled (unknown SPEC, unreadable model folder)
    ├── ProfileInterrupted         profiling was stopped; the partial profile is saved as incomplete
    ├── LoadTestError              the load generator failed (a generator process crashed or hung)
    ├── GateError                  a gate cannot compare its inputs (other hardware, bad SLO expression)
    └── CLIError                   command-line options that conflict or are missing (names the flags)

Library code raises these; only ``servewise.cli`` turns them into messages and exit codes.
"""

from __future__ import annotations

__all__ = [
    "ServewiseError",
    "ConfigError",
    "TraceError",
    "ArtifactError",
    "UnknownPolicyError",
    "MissingExtraError",
    "CLIError",
    "ProfileError",
    "ProfileInterrupted",
    "LoadTestError",
    "InvalidMeasurement",
    "GateError",
]


class ServewiseError(Exception):
    """Base class: an error whose message is fit to show a user as one line."""


class ConfigError(ServewiseError):
    """A configuration file or object is invalid; the message names the field."""


class TraceError(ServewiseError):
    """A trace file is malformed; the message names the file and the line."""


class ArtifactError(ServewiseError):
    """An artifact (JSON result, profile, ...) has an unknown schema or kind."""


class UnknownPolicyError(ServewiseError, KeyError):
    """A policy name is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(ServewiseError, ImportError):
    """An optional dependency is missing; the message says which extra to install."""


class CLIError(ServewiseError):
    """Command-line options conflict or are missing; the message names the flags."""


class ProfileError(ServewiseError):
    """A model cannot be profiled: unknown SPEC, unreadable model folder, bad variant list."""


class ProfileInterrupted(ServewiseError):
    """Profiling stopped early (Ctrl-C); what was measured is saved, marked incomplete."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class LoadTestError(ServewiseError):
    """A load test could not run to the end: a generator process crashed, hung or never started."""


class InvalidMeasurement(LoadTestError):
    """A live measurement ran but cannot be trusted (the load generator fell behind its schedule)."""


class GateError(ServewiseError):
    """``servewise gate`` cannot judge its inputs: profiles from other hardware or library
    versions (the message names the field), a bad SLO expression, a metric the artifact lacks."""
