"""servewise: find the cheapest deployment of a model that meets its latency SLOs, and prove it."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
