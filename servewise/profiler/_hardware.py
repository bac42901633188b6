"""Hardware fingerprint and capability probe (runs inside a worker process)."""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

from servewise.hardware import usable_cpus

__all__ = ["fingerprint", "capabilities", "usable_cpus"]

_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "fma",
    "neon",
    "asimd",
)


def _cpuinfo() -> tuple[str, list[str]]:
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and val.strip():
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    have = set(val.split())
                    flags = [x for x in _FLAGS if x in have]
    except OSError:
        pass
    return model, flags


def _mem_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - a broken optional install reads as absent
        return None


def fingerprint(threads_used: int) -> dict[str, Any]:
    """CPU model, cores, threads, memory; GPU name, driver, CUDA; library versions."""
    model, flags = _cpuinfo()
    hw: dict[str, Any] = {
        "cpu_model": model,
        "cpu_count": usable_cpus(),
        "threads_used": threads_used,
        "mem_bytes": _mem_bytes(),
        "cpu_flags": flags,
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "onnxruntime_version": _version("onnxruntime"),
        "tensorrt_version": _version("tensorrt"),
    }
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            hw["gpu_name"] = props.name
            hw["gpu_mem_bytes"] = int(props.total_memory)
            hw["cuda_version"] = torch.version.cuda
            try:
                import subprocess

                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
                hw["gpu_driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
            except (OSError, subprocess.SubprocessError):
                hw["gpu_driver"] = None
    except ImportError:
        pass
    return hw


def capabilities() -> dict[str, str | None]:
    """For each optional capability, ``None`` when usable here, else why not."""
    caps: dict[str, str | None] = {}
    try:
        import torch

        caps["torch"] = None
        caps["cuda"] = (
            None if torch.cuda.is_available() else "CUDA is not available on this machine (no NVIDIA GPU or driver)"
        )
    except ImportError:
        caps["torch"] = "torch is not installed (pip install 'servewise[profile]')"
        caps["cuda"] = caps["torch"]
    for mod, label, hint in (
        ("onnxruntime", "onnxruntime", "pip install 'servewise[profile]'"),
        ("onnx", "onnx", "pip install 'servewise[profile]'"),
        ("torchao", "torchao", "pip install 'servewise[profile]'"),
        ("torch_tensorrt", "torch-tensorrt", "install torch-tensorrt matching your torch and CUDA (NVIDIA's index)"),
    ):
        try:
            importlib.import_module(mod)
            caps[label] = None
        except Exception as err:  # noqa: BLE001 - any import failure means unusable
            caps[label] = (
                f"{label} is not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); {hint}"
            )
    return caps
