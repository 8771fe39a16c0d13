"""The plugin's persistent settings: defaults, a round trip through the JSON file, the zoo fallback, bad files."""

import json
from pathlib import Path

import pytest
from _napari import NAPARI_WARNINGS

from microzoo.errors import ConfigError
from microzoo.napari.settings import Settings, load_settings, save_settings, settings_path, zoo_url

pytestmark = NAPARI_WARNINGS


def test_the_napari_tests_keep_settings_out_of_the_home_folder():
    assert not settings_path().is_relative_to(Path.home())
    assert not load_settings().cache_dir.is_relative_to(Path.home())


def test_defaults_without_a_file_leave_choices_to_the_library(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROZOO_NAPARI_SETTINGS", str(tmp_path / "none.json"))
    monkeypatch.setenv("MICROZOO_NAPARI_CACHE", str(tmp_path / "cache"))
    settings = load_settings()
    assert (settings.zoo_url, settings.weight_format, settings.tile_size) == ("", "", None)
    assert settings.cache_dir == tmp_path / "cache"


def test_saved_settings_load_back(monkeypatch, tmp_path):
    path = tmp_path / "conf" / "napari.json"
    monkeypatch.setenv("MICROZOO_NAPARI_SETTINGS", str(path))
    monkeypatch.delenv("MICROZOO_NAPARI_CACHE")
    chosen = Settings(zoo_url="http://zoo.example:8000/", weight_format="onnx", tile_size=256, cache_dir=tmp_path / "c")
    assert save_settings(chosen) == path
    assert json.loads(path.read_text())["tile_size"] == 256
    assert [p.name for p in path.parent.iterdir()] == ["napari.json"]  # no temporary left
    loaded = load_settings()
    assert loaded == chosen
    assert loaded.zoo_url == "http://zoo.example:8000"


def test_the_cache_variable_wins_over_the_file(monkeypatch, tmp_path):
    save_settings(Settings(cache_dir=tmp_path / "from-file"))
    monkeypatch.setenv("MICROZOO_NAPARI_CACHE", str(tmp_path / "from-env"))
    assert load_settings().cache_dir == tmp_path / "from-env"


def test_zoo_url_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("MICROZOO_ZOO", "http://127.0.0.1:9/")
    assert zoo_url(Settings()) == "http://127.0.0.1:9"
    assert zoo_url(Settings(zoo_url="http://other:1")) == "http://other:1"
    monkeypatch.delenv("MICROZOO_ZOO")
    assert zoo_url(Settings()) is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "fix or delete the file"),
        ("[1, 2]", "JSON object"),
        ('{"tile_size": "big"}', "'tile_size' is 'big'"),
        ('{"tile_size": 4}', ">= 16"),
        ('{"weight_format": "keras_hdf5"}', "unknown weight format"),
        ('{"zoo_url": "ftp://x"}', "not an http(s) URL"),
    ],
)
def test_a_broken_file_is_named_with_what_to_do(content, words):
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(content)
    with pytest.raises(ConfigError, match="napari settings") as error:
        load_settings()
    assert words in str(error.value)
    assert str(settings_path()) in str(error.value)


def test_unknown_keys_are_ignored():
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text('{"tile_size": 128, "last_layer": "nuclei"}')
    assert load_settings().tile_size == 128
