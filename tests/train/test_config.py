"""Tests of the training configuration (``incasem train --config ... key=value``)."""

import inspect
import json
import math

import pytest
import yaml

from incasem.errors import ConfigError
from incasem.train.config import AugmentConfig, TrainingConfig, dotted_keys, load_training_config
from incasem.train.sampling import TrainingSampler


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_those_of_design_section_6():
    c = load_training_config(None)
    assert c == TrainingConfig()
    assert c.training.iterations == 200_000
    assert c.training.batch_size == 1
    assert c.training.input_size_voxels == (204, 204, 204)
    assert c.training.output_size_voxels == (110, 110, 110)
    assert (c.optimizer.lr, c.optimizer.weight_decay) == (3e-5, 3e-5)
    assert c.sampler_kwargs() == {
        "min_masked": 0.75,
        "mask_reject_probability": 0.95,
        "min_foreground": 0.05,
        "foreground_reject_probability": 0.9,
        "min_labelled": 0.0,
        "max_attempts": 1000,
    }
    a = c.augmentation
    assert a.control_point_spacing == (32, 32, 32)
    assert a.jitter_sigma == (2.0, 2.0, 2.0)
    assert a.rotation_interval == (0.0, math.pi / 2)
    assert (a.prob_shift, a.max_misalign) == (0.05, 2)
    assert (a.scale_min, a.scale_max, a.shift_min, a.shift_max) == (0.85, 1.15, -0.15, 0.15)
    i = c.intervals
    assert (i.save_every, i.validate_every, i.snapshot_every) == (1000, 1000, 1000)
    assert c.data.voxel_size == (5, 5, 5)
    assert (c.model.num_fmaps, c.model.fmap_inc_factor) == (32, 2)
    assert c.model.downsample_factors == ((2, 2, 2),) * 3
    assert (c.loss.clip_min, c.loss.clip_max) == (0.01, 0.99)
    # The config's defaults are those of the classes it feeds.
    assert c.augmentation == AugmentConfig()


def test_config_is_frozen():
    c = load_training_config(None)
    with pytest.raises(Exception):
        c.optimizer.lr = 1.0  # type: ignore[misc]


def test_yaml_file_with_nested_keys(tmp_path):
    path = write(
        tmp_path,
        """
training:
    iterations: 10000   # fine-tuning
    input_size_voxels: [132, 132, 132]
    output_size_voxels: [38, 38, 38]
optimizer:
    lr: 1e-4            # YAML 1.1 would read this as a string
reject:
    min_foreground: 0.1
augmentation:
    transpose_only: [1, 2]
    rotation_interval: [0, 0.5]
""",
    )
    c = load_training_config(path)
    assert c.training.iterations == 10000
    assert c.training.input_size_voxels == (132, 132, 132)
    assert c.training.output_size_voxels == (38, 38, 38)
    assert c.optimizer.lr == 1e-4
    assert c.optimizer.weight_decay == 3e-5
    assert c.reject.min_foreground == 0.1
    assert c.augmentation.transpose_only == (1, 2)
    assert load_training_config(write(tmp_path, "", "empty.yaml")) == TrainingConfig()


def test_json_file(tmp_path):
    path = write(tmp_path, json.dumps({"optimizer": {"lr": 0.001}}), "config.json")
    assert load_training_config(path).optimizer.lr == 0.001


def test_dotted_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, "optimizer:\n    lr: 1.0e-3\ntraining:\n    iterations: 5000\n")
    c = load_training_config(
        path, ["optimizer.lr=1e-4", "training.input_size_voxels=[132, 132, 132]", "training.output_size_voxels=[38,38,38]", "training.seed=7"]
    )
    assert c.optimizer.lr == 1e-4
    assert c.training.iterations == 5000
    assert c.training.input_size_voxels == (132, 132, 132)
    assert c.training.seed == 7
    # later overrides win over earlier ones
    assert load_training_config(path, ["optimizer.lr=1", "optimizer.lr=2"]).optimizer.lr == 2.0


def test_unknown_key_in_file_suggests_the_nearest(tmp_path):
    path = write(tmp_path, "optimizer:\n    learning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = one_line(error)
    assert str(path) in message
    assert "unknown key 'optimizer.learning_rate'" in message
    assert "did you mean 'optimizer.lr'?" in message

    with pytest.raises(ConfigError) as error:
        load_training_config(write(tmp_path, "trainig:\n    iterations: 5\n"))
    assert "unknown key 'trainig'" in one_line(error) and "did you mean 'training'" in str(error.value)


def test_unknown_key_in_override_suggests_the_nearest(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_training_config(None, ["optimizer.learning_rate=1e-4"])
    message = one_line(error)
    assert message.startswith("override 'optimizer.learning_rate=1e-4'")
    assert "unknown key 'optimizer.learning_rate'" in message and "did you mean 'optimizer.lr'?" in message

    with pytest.raises(ConfigError) as error:
        load_training_config(None, ["training.iteration=5"])
    assert "did you mean 'training.iterations'?" in one_line(error)

    with pytest.raises(ConfigError) as error:
        load_training_config(None, ["lr=5"])
    assert "did you mean 'optimizer.lr'?" in one_line(error)

    with pytest.raises(ConfigError) as error:
        load_training_config(None, ["optimizer.lr"])
    assert "key=value" in one_line(error)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1e-4", "optimizer.lr"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.lr=.nan", "optimizer.lr"),
        ("training.iterations=0", "training.iterations"),
        ("training.iterations=1.5", "training.iterations"),
        ("training.batch_size=true", "training.batch_size"),
        ("reject.mask_reject_probability=1.5", "reject.mask_reject_probability"),
        ("reject.min_masked=-0.1", "reject.min_masked"),
        ("training.output_size_voxels=[300, 110, 110]", "training.output_size_voxels"),
        ("training.output_size_voxels=[109, 110, 110]", "training.output_size_voxels"),
        ("training.input_size_voxels=[204, 204]", "training.input_size_voxels"),
        ("augmentation.jitter_sigma=[1, x, 1]", "augmentation.jitter_sigma"),
        ("augmentation.prob_shift=1.5", "augmentation.prob_shift"),
        ("augmentation.mirror_only=[0, 3]", "augmentation.mirror_only"),
        ("augmentation.transpose_only=[1, 1]", "augmentation.transpose_only"),
        ("augmentation.scale_min=2", "augmentation.scale_min"),
        ("augmentation.rotation_interval=[1, 0]", "augmentation.rotation_interval"),
        ("loss.clip_min=0", "loss.clip_min"),
        ("model.kernel_size_down=[[[3,3,3]]]", "model.kernel_size_down"),
        ("model.downsample_factors=[]", "model.downsample_factors"),
        ("intervals.save_every=0", "intervals.save_every"),
    ],
)
def test_wrong_values_name_the_dotted_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_training_config(None, [override])
    message = one_line(error)
    assert message.startswith(f"override '{override}'")
    assert f"key '{key}'" in message
    assert "must" in message


def test_wrong_values_in_file_name_the_file_and_key(tmp_path):
    path = write(tmp_path, "optimizer:\n    lr: -3.0e-5\n")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = one_line(error)
    assert message.startswith(str(path)) and "key 'optimizer.lr' must be a number > 0" in message

    path = write(tmp_path, "training:\n    output_size_voxels: [250, 110, 110]\n", "big.yaml")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    assert one_line(error).startswith(str(path)) and "key 'training.output_size_voxels'" in str(error.value)

    path = write(tmp_path, "optimizer: 3\n", "section.yaml")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    assert "key 'optimizer' must be a mapping" in one_line(error)


def test_override_blames_the_override_not_the_file(tmp_path):
    path = write(tmp_path, "training:\n    input_size_voxels: [132, 132, 132]\n")
    with pytest.raises(ConfigError) as error:
        load_training_config(path, ["training.output_size_voxels=[140, 140, 140]"])
    assert one_line(error).startswith("override 'training.output_size_voxels=[140, 140, 140]'")

    path = write(tmp_path, "training:\n    input_size_voxels: [100, 100, 100]\n", "small.yaml")
    with pytest.raises(ConfigError) as error:
        load_training_config(path, ["optimizer.lr=1e-4"])
    assert one_line(error).startswith(str(path)) and "key 'training.output_size_voxels'" in str(error.value)


def test_a_missing_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as error:
        load_training_config(missing)
    assert str(missing) in one_line(error) and "does not exist" in str(error.value)


@pytest.mark.parametrize(
    ("text", "name", "words"),
    [
        ("training:\n  iterations: [1, 2\n", "broken.yaml", "invalid YAML"),
        ('{"training": ', "broken.json", "invalid JSON"),
        ("- 1\n- 2\n", "list.yaml", "top level"),
        ("optimizer:\n    lr: 1.0e-4\n    lr: 2.0e-4\n", "twice.yaml", "'lr' appears twice"),
    ],
    ids=["invalid yaml", "invalid json", "not a mapping", "key twice"],
)
def test_an_invalid_file_is_one_line(tmp_path, text, name, words):
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    assert str(path) in one_line(error) and words in str(error.value)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_via_to_dict(tmp_path, suffix):
    config = load_training_config(
        None, ["optimizer.lr=1e-4", "training.seed=3", "augmentation.transpose_only=[1, 2]", "model.kernel_size_up=[[[3,3,3]],[[3,3,3]],[[1,3,3],[3,3,3]]]"]
    )
    data = config.to_dict()
    json.dumps(data)  # JSON-ready
    path = tmp_path / f"run{suffix}"
    path.write_text(yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data), encoding="utf-8")
    assert load_training_config(path) == config
    assert set(dotted_keys()) == {f"{s}.{k}" for s, section in data.items() for k in section}


def test_augment_config_and_sampler_kwargs_come_from_the_config():
    config = load_training_config(
        None,
        [
            "augmentation.control_point_spacing=[8, 16, 16]",
            "augmentation.jitter_sigma=[1, 3, 3]",
            "augmentation.prob_slip=0.1",
            "augmentation.scale_min=0.9",
            "augmentation.transpose_only=[1, 2]",
            "reject.min_masked=0.5",
            "reject.foreground_reject_probability=0.8",
        ],
    )
    augment = config.augmentation
    assert isinstance(augment, AugmentConfig)
    assert augment == AugmentConfig(
        control_point_spacing=(8, 16, 16),
        jitter_sigma=(1.0, 3.0, 3.0),
        prob_slip=0.1,
        scale_min=0.9,
        transpose_only=(1, 2),
    )
    for name, value in config.augmentation.model_dump().items():
        assert getattr(augment, name) == value
    kwargs = config.sampler_kwargs()
    assert set(kwargs) <= set(inspect.signature(TrainingSampler).parameters)
    assert kwargs["min_masked"] == 0.5 and kwargs["foreground_reject_probability"] == 0.8
    assert config.model_kwargs()["num_classes"] == 2
