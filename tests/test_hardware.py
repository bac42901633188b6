"""The hardware catalog: the shipped file is valid and consistent, names and aliases
resolve, and a bad user catalog fails with one line naming the file, entry and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from servewise.errors import ConfigError
from servewise.hardware import (
    DTYPE_CLASSES,
    Catalog,
    InstanceType,
    cpu_flop_per_cycle,
    cpu_peak_flops,
    load_catalog,
)

CATALOG = load_catalog()
REGION = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}
GIB = 1 << 30


def test_the_packaged_catalog_covers_three_clouds_with_cpus_and_gpus() -> None:
    assert len(CATALOG.instances) >= 20
    for cloud in REGION:
        kinds = {i.kind for i in CATALOG.instances if i.cloud == cloud}
        assert kinds == {"cpu", "gpu"}, cloud


@pytest.mark.parametrize("inst", CATALOG.instances, ids=lambda i: i.name)
def test_every_entry_is_valid_and_consistent(inst: InstanceType) -> None:
    assert InstanceType.model_validate(inst.model_dump()) == inst
    assert inst.region == REGION[inst.cloud]
    assert inst.price_per_hour_usd > 0 and inst.source
    assert (inst.accelerator is not None) == (inst.kind == "gpu")
    for dt in DTYPE_CLASSES:  # no dtype is slower than fp32 (a non-native one lists the fp32 rate)
        assert inst.peak_flops(dt) >= inst.peak_fp32_flops
    if inst.accelerator is not None:
        # one device's HBM/GDDR: hundreds of GB/s to a few TB/s; memory between 16 and 141 GiB
        assert 2e11 < inst.mem_bandwidth_bytes_per_s < 1e13
        assert 16 * GIB <= inst.accelerator.mem_bytes <= 141 * GIB
    else:
        assert "estimated" in inst.notes.lower()


@pytest.mark.parametrize("inst", [i for i in CATALOG.instances if i.kind == "cpu"], ids=lambda i: i.name)
def test_cpu_peaks_follow_the_same_formula_the_transfer_uses_for_the_source(inst: InstanceType) -> None:
    # A CPU-to-CPU transfer is unbiased only if both ends' peaks are estimated alike.
    assert inst.cores is not None and inst.cpu_freq_hz is not None
    want = cpu_peak_flops(inst.cores, inst.cpu_freq_hz, inst.cpu_flags)
    for dt in DTYPE_CLASSES:
        assert inst.peak_flops(dt) == pytest.approx(want[dt], rel=1e-9), dt


def test_flop_per_cycle_from_isa_flags() -> None:
    assert cpu_flop_per_cycle(["avx2", "fma", "avx512f"]) == {"fp32": 64, "bf16": 64, "fp16": 64, "int8": 128}
    spr = cpu_flop_per_cycle(["avx512f", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"])
    assert (spr["bf16"], spr["int8"]) == (1024, 2048)
    assert cpu_flop_per_cycle(["avx2", "fma"])["fp32"] == 32
    assert cpu_flop_per_cycle([]) == {"fp32": 16, "bf16": 16, "fp16": 16, "int8": 32}
    assert cpu_peak_flops(2, 3e9, ["avx512f"])["fp32"] == 2 * 3e9 * 64


@pytest.mark.parametrize(
    ("alias", "instance", "device"),
    [
        ("a10g", "g5.xlarge", "A10G"),
        ("l4", "g6.xlarge", "L4"),
        ("t4", "g4dn.xlarge", "T4"),
        ("a100-40gb", "a2-highgpu-1g", "A100"),
        ("a100-80gb", "Standard_NC24ads_A100_v4", "A100"),
        ("h100", "p5.48xlarge", "H100"),
        ("h200", "p5en.48xlarge", "H200"),
    ],
)
def test_aliases_resolve_to_an_instance_with_that_accelerator(alias: str, instance: str, device: str) -> None:
    inst = CATALOG.get(alias)
    assert inst.name == instance
    assert inst.accelerator is not None and device in inst.accelerator.name
    assert CATALOG.get(alias.upper()) == inst


def test_memory_of_the_a100_aliases() -> None:
    a40, a80 = CATALOG.get("a100-40gb").accelerator, CATALOG.get("a100-80gb").accelerator
    assert a40 is not None and a80 is not None
    assert (a40.mem_bytes, a80.mem_bytes) == (40 * GIB, 80 * GIB)


def test_names_are_case_insensitive_and_azure_prefix_is_optional() -> None:
    assert CATALOG.get("G5.XLARGE").name == "g5.xlarge"
    assert CATALOG.get("d8s_v5").name == "Standard_D8s_v5"
    assert CATALOG.get("standard_d8s_v5").name == "Standard_D8s_v5"


def test_an_unknown_name_suggests_close_ones_and_lists_every_name() -> None:
    with pytest.raises(ConfigError) as e:
        CATALOG.get("g5.xlarg")
    msg = str(e.value)
    assert "did you mean 'g5.xlarge'" in msg
    assert all(n in msg for n in [*CATALOG.names(), *CATALOG.aliases])
    assert "\n" not in msg


def test_find_accelerator_matches_the_cuda_device_name() -> None:
    assert (CATALOG.find_accelerator("NVIDIA A10G") or CATALOG.instances[0]).name == "g5.xlarge"
    t4 = CATALOG.find_accelerator("Tesla T4")
    assert t4 is not None and t4.accelerator is not None and t4.accelerator.name == "Tesla T4"
    assert CATALOG.find_accelerator("Mystery GPU") is None


def test_price_per_device_divides_the_instance_price() -> None:
    p4d = CATALOG.get("p4d.24xlarge")
    assert p4d.price_per_device_hour_usd == pytest.approx(p4d.price_per_hour_usd / 8)
    c7i = CATALOG.get("c7i.xlarge")
    assert c7i.price_per_device_hour_usd == c7i.price_per_hour_usd
    assert c7i.device == "cpu" and CATALOG.get("l4").device == "cuda"


# --------------------------------------------------------------------------- user catalogs


def _entry(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": "my-box",
        "cloud": "onprem",
        "region": "basement",
        "kind": "gpu",
        "vcpus": 16,
        "mem_bytes": 64 * GIB,
        "accelerator": {"name": "NVIDIA RTX 4090", "count": 2, "mem_bytes": 24 * GIB},
        "peak_fp32_flops": 8.26e13,
        "peak_bf16_flops": 1.65e14,
        "peak_fp16_flops": 1.65e14,
        "peak_int8_flops": 6.6e14,
        "mem_bandwidth_bytes_per_s": 1.008e12,
        "price_per_hour_usd": 0.5,
        "source": "my own amortisation, 2026",
    }
    e.update(kw)
    return e


def _write(tmp_path: Path, doc: Any) -> Path:
    p = tmp_path / "catalog.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _error(tmp_path: Path, doc: Any) -> str:
    p = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as e:
        load_catalog(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    return msg


def test_a_user_catalog_loads(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path, {"instances": [_entry()], "aliases": {"4090": "my-box"}}))
    assert isinstance(cat, Catalog)
    assert cat.get("4090").accelerator is not None
    assert cat.get("MY-BOX").price_per_device_hour_usd == 0.25


def test_a_missing_field_names_the_entry_and_field(tmp_path: Path) -> None:
    e = _entry()
    del e["peak_fp32_flops"]
    msg = _error(tmp_path, {"instances": [_entry(name="ok"), e]})
    assert "instances[1] (my-box)" in msg and "'peak_fp32_flops'" in msg


def test_a_bad_value_names_the_field_and_the_value(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"instances": [_entry(price_per_hour_usd=-1)]})
    assert "'price_per_hour_usd'" in msg and "-1" in msg


def test_a_misspelt_field_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"instances": [_entry(price_per_hour=1.0)]})
    assert "'price_per_hour'" in msg


def test_a_gpu_entry_needs_an_accelerator(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"instances": [_entry(accelerator=None)]})
    assert "no accelerator" in msg


def test_an_alias_to_nothing_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"instances": [_entry()], "aliases": {"fast": "missing-box"}})
    assert "'missing-box'" in msg


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"instances": [_entry(), _entry(name="MY-BOX")]})
    assert "twice" in msg


def test_a_catalog_without_instances_is_refused(tmp_path: Path) -> None:
    assert "'instances'" in _error(tmp_path, {"aliases": {}})
    assert "expected a mapping" in _error(tmp_path, ["not", "a", "mapping"])


def test_yaml_syntax_errors_and_missing_files_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("instances:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+"):
        load_catalog(p)
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such hardware catalog"):
        load_catalog(tmp_path / "nope.yaml")
