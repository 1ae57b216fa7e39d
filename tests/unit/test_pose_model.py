"""The one model interface over both heads: forward, stem split, decode outputs, loss, local weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.pose_model import build_model
from models.weights import WeightsError
from pipeline.codec import HeatmapCodec
from pipeline.keypoints import KeypointSchema

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT = (96, 128)  # small crops keep this fast; geometry is the same at 192x256


def _model(head: str, schema: KeypointSchema, **kw):
    codec = HeatmapCodec(INPUT, (INPUT[0] // 4, INPUT[1] // 4))
    return build_model(backbone="tiny", variant=16, head=head, codec=codec, schema=schema, **kw).eval()


def _batch(b: int, k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(b, 3, INPUT[1], INPUT[0], generator=g),
        "heatmaps": torch.rand(b, k, INPUT[1] // 4, INPUT[0] // 4, generator=g),
        "target_weight": torch.ones(b, k),
        "keypoints": torch.rand(b, k, 2, generator=g) * 80 + 8,
        "bbox": torch.tensor([[10.0, 20.0, 60.0, 90.0]] * b),
        "matrix": torch.tensor([[[1.1, 0.0, -5.0], [0.0, 1.1, -12.0]]] * b, dtype=torch.float64),
    }


@pytest.mark.parametrize("head", ["heatmap", "asla"])
@pytest.mark.parametrize("k", [17, 4])
def test_interface_shapes_and_stem_split(head, k):
    schema = (
        KeypointSchema.coco17()
        if k == 17
        else KeypointSchema.from_coco_category(
            {"id": 1, "name": "mouse", "keypoints": ["snout", "leftear", "rightear", "tailbase"]}
        )
    )
    model = _model(head, schema)
    batch = _batch(3, k)
    outputs = model(batch["image"])
    again = model.forward_from_stem(model.backbone.stem(batch["image"]))
    for key in outputs:
        torch.testing.assert_close(outputs[key], again[key])
    pred = model.decode(outputs)
    assert pred.keypoints.shape == (3, k, 2) and pred.scores.shape == (3, k)
    assert np.isfinite(pred.keypoints).all()
    if head == "heatmap":
        assert pred.response.shape == (3, k)
        # the SAHR scale head starts at s = 0, so the effective sigma is the codec's
        np.testing.assert_allclose(pred.sahr_sigma, model.codec.sigma, rtol=1e-6)
    else:
        assert pred.response is None and pred.sahr_sigma is None
    losses = model.train().loss(model(batch["image"]), batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.backbone.stem.parameters() if p.requires_grad)


def test_sahr_off_has_no_scale_map():
    model = _model("heatmap", KeypointSchema.coco17(), head_settings={"sahr": False})
    outputs = model(_batch(2, 17)["image"])
    assert "scale" not in outputs and model.decode(outputs).sahr_sigma is None


def test_local_backbone_weights_load_and_bad_files_fail(tmp_path):
    schema = KeypointSchema.coco17()
    source = _model("heatmap", schema)
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    loaded = _model("heatmap", schema, weights=str(path), weights_prefix="backbone.")
    images = _batch(2, 17)["image"]
    torch.testing.assert_close(loaded.backbone(images), source.backbone(images))
    with pytest.raises(WeightsError, match=r"missing\.pt"):
        _model("heatmap", schema, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="no key starts with prefix"):
        _model("heatmap", schema, weights=str(path), weights_prefix="nothing.")
    wide = build_model(backbone="tiny", variant=32, head="heatmap", codec=source.codec, schema=schema)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(WeightsError, match=r"file \(32"):
        _model("heatmap", schema, weights=str(tmp_path / "wide.pt"), weights_prefix="backbone.")


@pytest.mark.parametrize("head", ["heatmap", "asla"])
def test_flip_test_merges_as_each_head_says(head):
    """predict_batch asks the head to merge a crop and its mirror: the heatmap head averages the heatmaps with the
    mirrored ones (and decodes again), ASLA averages the keypoints and the scores (it has no map)."""
    from pipeline.inference import _unflip_keypoints, predict_batch

    schema = KeypointSchema.coco17()
    model = _model(head, schema)
    batch = {
        **_batch(2, 17),
        "flipped": torch.zeros(2, dtype=torch.bool),
        "instance_id": torch.tensor([1, 2]),
        "matrix": torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 2, dtype=torch.float64),
    }
    merged = predict_batch(model, batch, flip_test=True)
    images = batch["image"]
    plain, mirrored = model(images), model(torch.flip(images, dims=[3]))
    flipped_kp = _unflip_keypoints(model.decode(mirrored).keypoints, images.shape[3], schema.flip_index)
    if head == "heatmap":
        heatmaps = model.codec.flip_merge(plain["heatmaps"], mirrored["heatmaps"], schema.flip_index)
        expected, scores = model.codec.decode(heatmaps)
        np.testing.assert_allclose(merged["response"], scores)
    else:
        expected = 0.5 * (model.decode(plain).keypoints + flipped_kp)
        scores = 0.5 * (model.decode(plain).scores + model.decode(mirrored).scores[:, schema.flip_index])
        assert merged["response"] is None
    np.testing.assert_allclose(merged["keypoints"], expected, atol=1e-4)  # identity matrix: crop px = image px
    np.testing.assert_allclose(merged["scores"], scores, atol=1e-6)
    assert merged["flip_disagreement"].shape == (2,)


def test_a_model_json_of_an_earlier_loop_with_flat_head_keys_loads_with_its_settings(tmp_path):
    """Registered models of an earlier loop stored the head settings flat (model.asla_top_n, ...): load_model reads
    them into the head's section, so such a champion still serves as a teacher with the settings it was trained with."""
    import json

    from pipeline.config import params_from_dict, with_overrides
    from pipeline.model_store import build_codec, load_model, model_from_params, save_model

    params = with_overrides(
        params_from_dict({}),
        {"codec.input_size": list(INPUT), "model.variant": 16, "model.head": "asla", "model.asla.top_n": 3},
    )
    schema = KeypointSchema.coco17()
    model = model_from_params(params, build_codec(params), schema)
    save_model(tmp_path, model.state_dict(), params, schema, {})
    description = json.loads((tmp_path / "model.json").read_text())
    section = description["params"]["model"]
    flat = {k: v for k, v in section.items() if k not in ("heatmap", "asla")}
    flat |= {f"asla_{k}": v for k, v in section.pop("asla").items()} | section.pop("heatmap")
    description["params"]["model"] = flat
    (tmp_path / "model.json").write_text(json.dumps(description))
    loaded = load_model(tmp_path)
    assert loaded.head.top_n == 3 and loaded.head.k == 9
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
