"""The top-level API is exactly what is intended (as httpx tests its exports)."""

import microzoo


def test_top_level_api() -> None:
    assert sorted(microzoo.__all__) == ["MicrozooError", "__version__", "load_model"]
    public = {name for name in dir(microzoo) if not name.startswith("_")}
    # subpackages appear once imported; nothing else is public at the top
    assert public - {"errors", "progress", "io", "package", "runtime", "qc", "trust", "train", "zoo", "cli",
                     "demo", "TYPE_CHECKING", "Any", "annotations"} == {"MicrozooError", "load_model"}


def test_importing_microzoo_does_not_import_torch_or_the_spec() -> None:
    import subprocess
    import sys

    code = "import sys, microzoo; print('torch' in sys.modules, 'bioimageio.spec' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_train_reexports_its_verbs_and_its_configs_load_without_torch() -> None:
    import subprocess
    import sys

    import microzoo.train as train

    assert sorted(train.__all__) == sorted([
        "TASKS", "ExportSpec", "TrainingResult", "care_config", "export_package", "instances_config", "load_config",
        "n2v_config", "predict_image", "save_config", "semantic_config", "short_form_config", "train",
    ])  # fmt: skip
    for name in train.__all__:  # every name resolves (the torch-bound ones on first use) and is documented
        member = getattr(train, name)
        assert name == "TASKS" or (member.__doc__ or "").strip(), name
    assert set(train.TASKS) == {"semantic", "instances", "care", "n2v"}
    code = ("import sys; from microzoo.train import TASKS, load_config, n2v_config, semantic_config; "
            "print('torch' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"]
