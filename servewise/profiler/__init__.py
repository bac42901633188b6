"""The profile stage: measure a model's variants on this machine and write a ``Profile``.

Importing this package does not import torch: the parent process only plans and
records; each variant is measured in its own worker process (``profiler._worker``).
"""

from servewise.profiler._runner import FaultInjection, Grid, ProfileSettings, run_profile
from servewise.profiler._spec import SPEC_FORMS, ModelSpec, parse_spec
from servewise.profiler._timing import TimingSettings
from servewise.profiler._variants import CPU_VARIANTS, GPU_VARIANTS, VARIANTS, parse_variants

__all__ = [
    "run_profile",
    "ProfileSettings",
    "Grid",
    "TimingSettings",
    "FaultInjection",
    "ModelSpec",
    "parse_spec",
    "SPEC_FORMS",
    "VARIANTS",
    "CPU_VARIANTS",
    "GPU_VARIANTS",
    "parse_variants",
]
