"""The hardware catalog: cloud instance types as data (peaks, bandwidth, memory, price).

The packaged catalog (``servewise/data/hardware_catalog.yaml``) lists CPU and GPU
instance types of AWS, GCP and Azure, plus short accelerator aliases (``a10g``, ``h100``,
...). A user passes their own YAML file of the same schema to :func:`load_catalog`.
``profiler.transfer`` uses it to carry a measured profile to another machine.

Peaks describe the compute device one replica uses: all the VM's cores for kind
``cpu``, one accelerator for kind ``gpu``. CPU peaks are estimates from the ISA
(:func:`cpu_peak_flops`), GPU peaks datasheet numbers; prices are list prices at a date.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from servewise.config import Frozen, format_validation_error, read_yaml
from servewise.errors import ConfigError

__all__ = [
    "CATALOG_SCHEMA_VERSION",
    "DTYPE_CLASSES",
    "Accelerator",
    "InstanceType",
    "Catalog",
    "load_catalog",
    "parse_catalog",
    "cpu_flop_per_cycle",
    "cpu_peak_flops",
    "usable_cpus",
]


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)

CATALOG_SCHEMA_VERSION = 1

#: The compute classes a peak is given for, in the order of the ``peak_*_flops`` fields.
DTYPE_CLASSES = ("fp32", "bf16", "fp16", "int8")

DtypeClass = Literal["fp32", "bf16", "fp16", "int8"]


class Accelerator(Frozen):
    """The accelerators of an instance: what they are, how many, and each one's memory."""

    name: str = Field(min_length=1, description="Device name as CUDA reports it, e.g. 'NVIDIA A10G'.")
    count: int = Field(ge=1, description="Devices in one instance.")
    mem_bytes: int = Field(gt=0, description="Memory of ONE device, bytes.")


class InstanceType(Frozen):
    """One instance type of a cloud (or a machine of your own).

    The ``peak_*_flops`` and ``mem_bandwidth_bytes_per_s`` fields describe the device
    one replica runs on: the whole VM's CPU for kind ``cpu``, ONE accelerator for kind
    ``gpu``. ``price_per_hour_usd`` is the whole instance's.
    """

    name: str = Field(min_length=1, description="Instance type name, e.g. 'g5.xlarge'.")
    cloud: str = Field(min_length=1, description="aws, gcp, azure, or your own label.")
    region: str = Field(min_length=1, description="Region the price is for, e.g. 'us-east-1'.")
    kind: Literal["cpu", "gpu"]
    vcpus: int = Field(ge=1, description="Virtual CPUs (hardware threads) of the instance.")
    cores: int | None = Field(default=None, ge=1, description="Physical cores the CPU peaks were estimated from.")
    cpu_freq_hz: float | None = Field(default=None, gt=0, description="All-core clock the CPU peaks assume, Hz.")
    mem_bytes: int = Field(gt=0, description="Host memory, bytes.")
    cpu_model: str = Field(default="", description="Host CPU, for the fingerprint.")
    cpu_flags: tuple[str, ...] = Field(default=(), description="ISA flags the CPU peaks assume (avx512f, amx_tile, ...).")
    accelerator: Accelerator | None = Field(default=None, description="Required for kind gpu; absent for kind cpu.")
    peak_fp32_flops: float = Field(gt=0, description="Dense fp32 FLOP/s of one replica's device.")
    peak_bf16_flops: float = Field(gt=0, description="Dense bf16 FLOP/s (the fp32 rate where bf16 is not native).")
    peak_fp16_flops: float = Field(gt=0, description="Dense fp16 FLOP/s (the fp32 rate where fp16 is not native).")
    peak_int8_flops: float = Field(gt=0, description="Dense int8 operations per second.")
    mem_bandwidth_bytes_per_s: float = Field(gt=0, description="DRAM (CPU) or HBM/GDDR (one GPU) bandwidth.")
    price_per_hour_usd: float = Field(ge=0, description="On-demand list price of the whole instance, per hour.")
    source: str = Field(min_length=1, description="Where the numbers come from (datasheet, price page, date).")
    notes: str = Field(default="", description="Estimates, caveats.")

    @model_validator(mode="after")
    def _kind_matches(self) -> InstanceType:
        if self.kind == "gpu" and self.accelerator is None:
            raise ValueError(f"instance {self.name!r} is kind 'gpu' but has no accelerator")
        if self.kind == "cpu" and self.accelerator is not None:
            raise ValueError(f"instance {self.name!r} is kind 'cpu' but has an accelerator (make it kind 'gpu')")
        return self

    @property
    def device(self) -> Literal["cpu", "cuda"]:
        """The torch device a replica on this instance uses."""
        return "cuda" if self.kind == "gpu" else "cpu"

    @property
    def device_mem_bytes(self) -> int:
        """Memory a replica's model must fit in: one accelerator's, or the host's."""
        return self.accelerator.mem_bytes if self.accelerator is not None else self.mem_bytes

    @property
    def price_per_device_hour_usd(self) -> float:
        """The instance price divided over its accelerators (the whole price for a CPU)."""
        return self.price_per_hour_usd / (self.accelerator.count if self.accelerator is not None else 1)

    def peak_flops(self, dtype_class: str) -> float:
        """Peak FLOP/s for ``fp32``, ``bf16``, ``fp16`` or ``int8``."""
        if dtype_class not in DTYPE_CLASSES:
            raise ConfigError(f"unknown dtype class {dtype_class!r}; expected one of {', '.join(DTYPE_CLASSES)}")
        return float(getattr(self, f"peak_{dtype_class}_flops"))


def _key(name: str) -> str:
    """Lookup key: case-insensitive, Azure's ``Standard_`` prefix optional."""
    k = name.strip().lower()
    return k[len("standard_") :] if k.startswith("standard_") else k


class Catalog(Frozen):
    """Instance types, plus short aliases (``a10g`` → ``g5.xlarge``)."""

    kind: Literal["hardware_catalog"] = "hardware_catalog"
    schema_version: Literal[1] = 1
    notes: str = ""
    instances: tuple[InstanceType, ...] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict, description="Alias -> instance name.")

    @model_validator(mode="after")
    def _names(self) -> Catalog:
        seen: dict[str, str] = {}
        for inst in self.instances:
            k = _key(inst.name)
            if k in seen:
                raise ValueError(f"instance name {inst.name!r} appears twice (also as {seen[k]!r})")
            seen[k] = inst.name
        for alias, target in self.aliases.items():
            if _key(alias) in seen:
                raise ValueError(f"alias {alias!r} is also an instance name")
            if _key(target) not in seen:
                raise ValueError(f"alias {alias!r} points to {target!r}, which is not an instance in the catalog")
        return self

    def names(self) -> list[str]:
        """Instance names, in catalog order."""
        return [i.name for i in self.instances]

    def get(self, name: str) -> InstanceType:
        """The instance called ``name`` or aliased so (case-insensitive).

        Raises :class:`~servewise.errors.ConfigError` naming close matches and listing
        every valid name.
        """
        by_key = {_key(i.name): i for i in self.instances}
        k = _key(name)
        if k in by_key:
            return by_key[k]
        aliases = {_key(a): t for a, t in self.aliases.items()}
        if k in aliases:
            return by_key[_key(aliases[k])]
        valid = [*self.names(), *self.aliases]
        shown = {_key(v): v for v in valid}
        close = [shown[c] for c in difflib.get_close_matches(k, list(shown), n=3, cutoff=0.6)]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
        raise ConfigError(f"unknown hardware {name!r}{hint} Valid names: {', '.join(valid)}")

    def find_accelerator(self, device_name: str) -> InstanceType | None:
        """The first GPU instance whose accelerator is ``device_name`` (as CUDA reports it).

        Matches case-insensitively, ignoring spaces, dashes and a leading ``NVIDIA``.
        """
        want = _device_key(device_name)
        for inst in self.instances:
            if inst.accelerator is not None and _device_key(inst.accelerator.name) == want:
                return inst
        return None


def _device_key(name: str) -> str:
    k = name.lower().replace("nvidia", "").replace("tesla", "")
    return "".join(ch for ch in k if ch.isalnum())


# --------------------------------------------------------------------------- CPU peaks

# FLOP (or int8 op) per cycle per core. x86: AVX-512 with two FMA units is 16 fp32 lanes
# x 2 FLOP x 2 units = 64; AVX2+FMA 32; AMX (Sapphire Rapids) 1024 bf16 / 2048 int8;
# AVX512-BF16 / AVX512-FP16 128; AVX512-VNNI 256 int8; AVX-VNNI 128. Arm: SVE 2x256-bit
# (Neoverse V1) 32 fp32; NEON 2x128-bit 16; bf16 (BFMMLA) 4x, i8mm 8x, fp16 2x fp32.


def cpu_flop_per_cycle(flags: Iterable[str]) -> dict[str, float]:
    """Peak operations per cycle per core, per dtype class, from ISA flags.

    Unknown ISAs get the conservative NEON/SSE rate (16 fp32). bf16 or fp16 without a
    native instruction gets the fp32 rate (converted, computed in fp32); int8 without a
    dot-product instruction (VNNI, AMX, I8MM, DOTPROD) twice the fp32 rate.
    """
    f = {x.lower() for x in flags}
    amx = "amx_tile" in f
    if "avx512f" in f:
        fp32 = 64.0
    elif "avx2" in f and "fma" in f:
        fp32 = 32.0
    elif "sve" in f:
        fp32 = 32.0
    else:
        fp32 = 16.0
    if "amx_bf16" in f or amx:
        bf16 = 1024.0
    elif "avx512_bf16" in f:
        bf16 = 128.0
    elif "bf16" in f:
        bf16 = 4 * fp32
    else:
        bf16 = fp32
    if "amx_fp16" in f:
        fp16 = 1024.0
    elif "avx512_fp16" in f:
        fp16 = 128.0
    elif "asimdhp" in f or "fphp" in f:
        fp16 = 2 * fp32
    else:
        fp16 = fp32
    if "amx_int8" in f or amx:
        int8 = 2048.0
    elif "avx512_vnni" in f:
        int8 = 256.0
    elif "avx_vnni" in f or "avx512bw" in f:
        int8 = 128.0
    elif "i8mm" in f:
        int8 = 8 * fp32
    elif "asimddp" in f:
        int8 = 4 * fp32
    else:
        int8 = 2 * fp32
    return {"fp32": fp32, "bf16": bf16, "fp16": fp16, "int8": int8}


def cpu_peak_flops(cores: int, freq_hz: float, flags: Iterable[str]) -> dict[str, float]:
    """Estimated peak FLOP/s per dtype class: ``cores × freq_hz × FLOP/cycle/core``."""
    return {k: cores * freq_hz * v for k, v in cpu_flop_per_cycle(flags).items()}


# --------------------------------------------------------------------------- loading


def _packaged() -> Path:
    return Path(str(resources.files("servewise").joinpath("data", "hardware_catalog.yaml")))


def parse_catalog(data: Any, source: str = "hardware catalog") -> Catalog:
    """Validate a mapping (e.g. parsed YAML) into a :class:`Catalog`.

    Errors are one line naming ``source``, the entry and its field.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'instances', got {type(data).__name__}")
    raw = data.get("instances")
    instances: list[InstanceType] = []
    if isinstance(raw, list):
        for i, entry in enumerate(raw):
            name = entry.get("name") if isinstance(entry, dict) else None
            where = f"{source}: instances[{i}]" + (f" ({name})" if isinstance(name, str) else "")
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a mapping of instance fields, got {type(entry).__name__}")
            try:
                instances.append(InstanceType.model_validate(entry))
            except ValidationError as err:
                raise ConfigError(format_validation_error(err, where)) from None
    try:
        return Catalog.model_validate({**data, "instances": instances if isinstance(raw, list) else raw})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read a hardware catalog YAML file; ``None`` reads the one shipped with servewise (parsed once)."""
    if path is None:
        return _packaged_catalog()
    p = Path(path)
    return parse_catalog(read_yaml(p, "hardware catalog"), str(p))


@functools.cache
def _packaged_catalog() -> Catalog:
    p = _packaged()
    return parse_catalog(read_yaml(p, "hardware catalog"), str(p))
