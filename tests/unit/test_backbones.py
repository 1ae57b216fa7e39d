"""Backbones (shapes, stem/body split, gradients, published sizes), FLOP counting, summary CLI, weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.backbones import BACKBONES, Backbone, build_backbone
from models.summary import count_flops, count_macs, count_parameters, with_head
from models.weights import WeightsError, load_state_dict_file, read_state_dict
from pipeline.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = [("tiny", 32), ("resnet", 18), ("resnet", 50), ("hrnet", 32), ("hrnet", 48)]
SMALL = [("tiny", 32), ("resnet", 18), ("hrnet", 32)]


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("name", "variant"), ALL)
def test_shapes_and_stem_body_split(name: str, variant: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, variant).eval()
    assert isinstance(net, Backbone) and net.stride == 4
    x = torch.randn(2, 3, 96, 64)  # (B, 3, H, W), H and W multiples of 32
    with torch.no_grad():
        features = net.stem(x)
        out = net(x)
        assert features.shape[-2:] == (24, 16)  # the Mixup point: one stride-4 tensor
        assert out.shape == (2, net.out_channels, 24, 16)
        assert torch.equal(net.body(features), out)
        # what the dual-branch Mixup does: mix stem features of two images, run the body
        mixed = net.body(0.8 * features[:1] + 0.2 * features[1:])
    assert mixed.shape == (1, net.out_channels, 24, 16)


def test_out_channels() -> None:
    assert build_backbone("tiny").out_channels == 32
    assert build_backbone("tiny", 16).out_channels == 16
    assert build_backbone("resnet", 18).out_channels == 256
    assert build_backbone("hrnet", 32).out_channels == 32


def test_tiny_accepts_multiples_of_four() -> None:
    net = build_backbone("tiny").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 100, 76)).shape == (1, 32, 25, 19)


@pytest.mark.parametrize(("name", "variant"), SMALL)
def test_gradients_reach_the_first_conv(name: str, variant: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, variant).train()
    out = net(torch.randn(2, 3, 64, 64))
    out.square().mean().backward()
    grad = _first_conv(net).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_tiny_receptive_field_covers_a_person() -> None:
    torch.manual_seed(0)
    net = build_backbone("tiny")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)  # undo the zero-init of residual branches, which hides them at initialisation
    net.eval()
    x = torch.randn(1, 3, 384, 384, requires_grad=True)
    out = net(x)
    out[0, :, 48, 48].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3))).flatten()
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2))).flatten()
    assert rows.max() - rows.min() + 1 > 150 and cols.max() - cols.min() + 1 > 150


@pytest.mark.parametrize(
    ("name", "variant", "published_m"),
    [("resnet", 50, 34.0), ("hrnet", 32, 28.5), ("hrnet", 48, 63.6)],
)
def test_parameter_counts_match_the_papers(name: str, variant: int, published_m: float) -> None:
    params = count_parameters(with_head(build_backbone(name, variant), 17))
    assert abs(params / 1e6 - published_m) / published_m < 0.02


@pytest.mark.parametrize(("name", "variant", "mmpose_gmacs"), [("resnet", 50, 5.46), ("hrnet", 32, 7.7)])
def test_macs_match_mmpose(name: str, variant: int, mmpose_gmacs: float) -> None:
    model = with_head(build_backbone(name, variant), 17).train()
    gmacs = count_macs(model, (192, 256))
    assert abs(gmacs - mmpose_gmacs) / mmpose_gmacs < 0.02
    assert count_flops(model, (192, 256)) == pytest.approx(2 * gmacs)
    assert model.training and next(model.parameters()).device.type == "cpu"  # left untouched


def test_build_backbone_rejects_unknown_names_and_variants() -> None:
    with pytest.raises(ValueError, match="tiny, resnet, hrnet"):
        build_backbone("vgg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(18, 34, 50, 101\)"):
        build_backbone("resnet", 42)
    with pytest.raises(ValueError, match=r"\(32, 48\)"):
        build_backbone("hrnet", 40)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_backbone("tiny", 12)
    assert set(BACKBONES) == {"tiny", "resnet", "hrnet"}


@pytest.mark.parametrize(("name", "variant"), [("resnet", 18), ("resnet", 50), ("hrnet", 32)])
def test_reference_prefixes_cover_every_key(name: str, variant: int) -> None:
    net = build_backbone(name, variant)
    ours = tuple(net.reference_prefixes.values())
    assert all(k.startswith(ours) for k in net.state_dict())


def test_summary_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--input-size", "64", "96", "--keypoints", "4"]) == 0
    out = capsys.readouterr().out
    for label in ("tiny (width 32)", "resnet-18", "resnet-50", "hrnet-w32", "hrnet-w48", "GMACs at 64x96"):
        assert label in out
    assert main(["summary", "--input-size", "100", "96"]) == 2
    assert "--input-size must be positive multiples of 32" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- weights


def _trained_tiny() -> Backbone:
    torch.manual_seed(0)
    net = build_backbone("tiny", 16)
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 64, 64))  # moves BN running statistics away from their initial values
    return net.eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_state_dict_round_trip(tmp_path) -> None:
    net = _trained_tiny()
    path = tmp_path / "tiny.pth"
    torch.save(net.state_dict(), path)
    fresh = build_backbone("tiny", 16)
    assert not _same_outputs(net, fresh)
    load_state_dict_file(fresh, path)
    assert _same_outputs(net, fresh)


def test_ddp_checkpoint_dict_and_prefix(tmp_path) -> None:
    net = _trained_tiny()
    ddp = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(ddp, tmp_path / "ddp.pt")
    fresh = build_backbone("tiny", 16)
    load_state_dict_file(fresh, tmp_path / "ddp.pt")
    assert _same_outputs(net, fresh)

    whole = {"model": {**{f"backbone.{k}": v for k, v in net.state_dict().items()}, "head.weight": torch.zeros(4)}}
    torch.save(whole, tmp_path / "whole.pt")
    fresh = build_backbone("tiny", 16)
    load_state_dict_file(fresh, tmp_path / "whole.pt", prefix="backbone.")
    assert _same_outputs(net, fresh)
    with pytest.raises(WeightsError, match=r"no key starts with prefix 'neck\.'.*backbone\."):
        load_state_dict_file(fresh, tmp_path / "whole.pt", prefix="neck.")


def test_reference_names_load_with_rename(tmp_path) -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet", 18)
    to_reference = {ours: ref for ref, ours in net.reference_prefixes.items()}
    reference = {}
    for k, v in net.state_dict().items():
        ours = next(p for p in to_reference if k.startswith(p))
        if not k.endswith("num_batches_tracked"):  # torchvision's ImageNet files predate this buffer
            reference[to_reference[ours] + k[len(ours) :]] = v
    reference["fc.weight"] = torch.zeros(1000, 512)
    torch.save(reference, tmp_path / "resnet18-torchvision.pth")
    fresh = build_backbone("resnet", 18)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): fc\.weight"):
        load_state_dict_file(fresh, tmp_path / "resnet18-torchvision.pth", rename=net.reference_prefixes)
    load_state_dict_file(fresh, tmp_path / "resnet18-torchvision.pth", rename=net.reference_prefixes, strict=False)
    assert torch.equal(fresh.stem.layer1[0].conv1.weight, net.stem.layer1[0].conv1.weight)
    assert torch.equal(fresh.body.deconv_layers[0].weight, net.body.deconv_layers[0].weight)


def test_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(WeightsError, match="does not exist") as info:
        load_state_dict_file(build_backbone("tiny", 16), path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_shape_mismatch_names_parameter_and_both_shapes(tmp_path) -> None:
    state = build_backbone("tiny", 16).state_dict()
    state["stem.conv1.0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    for strict in (True, False):  # a wrong shape can never be loaded, strict or not
        with pytest.raises(WeightsError, match=r"stem\.conv1\.0\.weight: file \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
            load_state_dict_file(build_backbone("tiny", 16), tmp_path / "bad.pth", strict=strict)


def test_missing_keys_and_non_state_dicts(tmp_path) -> None:
    state = build_backbone("tiny", 16).state_dict()
    del state["body.smooth4.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing keys \(1\): body\.smooth4\.0\.weight"):
        load_state_dict_file(build_backbone("tiny", 16), tmp_path / "partial.pth")
    load_state_dict_file(build_backbone("tiny", 16), tmp_path / "partial.pth", strict=False)

    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    torch.save({"lr": 0.1}, tmp_path / "dict.pth")
    for name in ("list.pth", "dict.pth"):
        with pytest.raises(WeightsError, match="not a state dict"):
            read_state_dict(tmp_path / name)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(tmp_path / "junk.pth")


def test_measure_throughput_runs_and_restores_threads() -> None:
    from bench.models import measure_throughput

    threads = torch.get_num_threads()
    r = measure_throughput("tiny", 16, (64, 64), 2, iters=1, warmup=1, threads=1, channels_last=True)
    assert r["images_per_s"] > 0 and r["threads"] == 1 and r["variant"] == 16
    assert torch.get_num_threads() == threads
