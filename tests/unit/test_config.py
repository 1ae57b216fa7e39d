"""params.yaml validation: every bad value fails at once and names the key, the value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.codec.input_size == [144, 192]
    assert isinstance(params.data.labeled, float)


def test_defaults_fill_missing_sections():
    params = params_from_dict({})
    assert params.data.synthetic.num_images > 0
    # defaults are not shared between instances
    assert params_from_dict({}).codec.input_size is not params.codec.input_size


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"sourc": "synthetic"}}, ["data.sourc", "allowed keys", "source"]),
        ({"trian": {}}, ["trian", "allowed keys"]),
        ({"data": {"source": "kitti"}}, ["data.source", "'kitti'", "'synthetic'", "'coco'", "'deeplabcut'"]),
        ({"data": {"labeled": 0}}, ["data.labeled", "0", "> 0"]),
        ({"data": {"labeled": "many"}}, ["data.labeled", "'many'", "number"]),
        ({"data": {"synthetic": {"num_images": 2.5}}}, ["data.synthetic.num_images", "2.5", "integer"]),
        ({"data": {"synthetic": {"occluded": 1.5}}}, ["data.synthetic.occluded", "1.5", "<= 1"]),
        ({"data": {"synthetic": {"num_images": True}}}, ["data.synthetic.num_images", "True", "integer"]),
        ({"codec": {"input_size": [192]}}, ["codec.input_size", "[192]", "exactly 2"]),
        ({"codec": {"dark": "yes"}}, ["codec.dark", "'yes'", "true or false"]),
        ({"data": {"sigmas": [0.1, "x"]}}, ["data.sigmas[1]", "'x'", "number"]),
        ({"data": "synthetic"}, ["data", "'synthetic'", "mapping"]),
        ({"codec": {"sigma": float("nan")}}, ["codec.sigma", "nan", "number"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw, expected):
    with pytest.raises(ParamsError) as err:
        params_from_dict(raw)
    message = str(err.value)
    for part in expected:
        assert part in message, f"{part!r} missing from: {message}"


def test_load_params_reports_file_problems(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text(yaml.safe_dump({"data": {"val_images": 0}}))
    with pytest.raises(ParamsError, match=r"data\.val_images = 0: must be >= 1"):
        load_params(bad)


def test_dotted_overrides_replace_and_validate():
    from pipeline.config import with_overrides

    base = load_params(REPO / "params.yaml")
    changed = with_overrides(base, {"train.epochs": 3, "data.synthetic.num_images": 200})
    assert changed.train.epochs == 3 and changed.data.synthetic.num_images == 200
    assert base.train.epochs != 3  # the original is left as it was
    assert with_overrides(base, {}) == base
    with pytest.raises(ParamsError, match=r"override 'train.epoch': no setting 'epoch' in train"):
        with_overrides(base, {"train.epoch": 3})
    with pytest.raises(ParamsError, match=r"override 'trian.epochs': 'trian' is not a section"):
        with_overrides(base, {"trian.epochs": 3})
    with pytest.raises(ParamsError, match=r"train.lr = inf"):
        with_overrides(base, {"train.lr": float("inf")})


def test_a_head_setting_at_its_old_flat_place_names_where_it_moved():
    with pytest.raises(ParamsError, match=r"unknown key model\.wahr \(moved to model\.heatmap\.wahr\)"):
        params_from_dict({"model": {"wahr": False}})
    params = params_from_dict({"model": {"head": "asla", "asla": {"k": 5}, "heatmap": {"sahr": False}}})
    assert params.model.asla.k == 5 and params.model.heatmap.sahr is False


def test_a_model_section_of_an_earlier_loop_is_read_in_todays_layout():
    from pipeline.config import upgrade_model_section

    old = {"backbone": "tiny", "head": "asla", "sahr": False, "wahr_gamma": 0.02, "asla_k": 7, "asla_top_n": 3}
    params = params_from_dict({"model": upgrade_model_section(old)})
    assert params.model.heatmap.sahr is False and params.model.heatmap.wahr_gamma == 0.02
    assert params.model.asla.k == 7 and params.model.asla.top_n == 3 and params.model.backbone == "tiny"
