import pytest

from space_defs import DataShape, WRNConfig, parse_arch, wrn, wrn34_r


def test_presets_and_names():
    assert wrn(28, 10).channels == (160, 320, 640) and wrn(28, 10).depths == (4, 4, 4)
    assert wrn(28, 10).name == "WRN-28-10"
    assert wrn34_r().name == "WRN-34 d5-5-5 c320-640-512"
    assert wrn34_r().widen_factors == (20, 20, 8)
    assert WRNConfig((1, 2, 3), (16, 40, 64)).depth == 16


@pytest.mark.parametrize("text", ["WRN-28-10", "wrn-16-4", "WRN-34-R", "d1-2-3 c16-40-64",
                                  "WRN-16 d1-2-3 c16-40-64"])
def test_parse_arch_round_trips_names(text):
    cfg = parse_arch(text)
    assert parse_arch(cfg.name) == cfg


@pytest.mark.parametrize("text", ["", "WRN-27-10", "resnet18", "d1-2 c16-32"])
def test_parse_arch_rejects(text):
    with pytest.raises(ValueError, match="architecture|depth"):
        parse_arch(text)


def test_dict_round_trip_and_flat_values():
    cfg = WRNConfig((5, 5, 5), (320, 640, 512), data=DataShape(in_channels=1, num_classes=100, input_size=8))
    flat = cfg.to_dict()
    assert flat["depth1"] == 5 and flat["channel3"] == 512 and flat["num_classes"] == 100
    assert all(isinstance(v, int) for v in flat.values())
    assert WRNConfig.from_dict({**flat, "unrelated": "ignored"}) == cfg


def test_from_dict_accepts_numpy_and_float_columns():
    np = pytest.importorskip("numpy")
    flat = {k: np.int64(v) for k, v in wrn(16, 4).to_dict().items()}
    flat["channel1"] = 64.0  # a NaN-able Parquet column comes back as float
    assert WRNConfig.from_dict(flat) == wrn(16, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=(1, 2), channels=(16, 32, 64)), "3 integers"),
    (dict(depths=(1, 0, 1), channels=(16, 32, 64)), "positive"),
    (dict(depths=(1, 1, 1), channels=(16, 32.5, 64)), "positive integers"),
    (dict(depths=(1, 1, 1), channels=(16, 32, 64), stem_channels=0), "stem_channels"),
    (dict(depths=(1, 1, 1), channels=(16, 32, 64), data=(1, 10, 8)), "DataShape"),
    (dict(depths="111", channels=(16, 32, 64)), "3 integers"),
    (dict(depths=(True, 1, 1), channels=(16, 32, 64)), "positive integers"),
])
def test_invalid_configs_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WRNConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=1), "num_classes"), (dict(input_size=0), "input_size"),
    (dict(in_channels=True), "in_channels"),
])
def test_invalid_data_shapes_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataShape(**kwargs)


def test_from_dict_reads_the_data_shape_and_defaults_it():
    flat = wrn(16, 4).to_dict()
    assert {k: flat[k] for k in ("in_channels", "num_classes", "input_size")} == {
        "in_channels": 3, "num_classes": 10, "input_size": 32}
    del flat["num_classes"]
    assert WRNConfig.from_dict(flat).data == DataShape()


def test_frozen():
    with pytest.raises(Exception):
        wrn(16, 4).depths = (1, 1, 1)


def test_the_label_is_the_form_parse_arch_reads():
    cfg = WRNConfig(depths=(2, 1, 2), channels=(18, 18, 36))
    assert cfg.label == "d2-1-2 c18-18-36" and parse_arch(cfg.label) == cfg
    assert wrn34_r().name == f"WRN-34 {wrn34_r().label}"
