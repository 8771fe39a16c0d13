"""The top-level API is exactly what is intended (as httpx tests its exports)."""

import microzoo


def test_top_level_api() -> None:
    assert sorted(microzoo.__all__) == ["MicrozooError", "__version__", "load_model"]
    public = {name for name in dir(microzoo) if not name.startswith("_")}
    # subpackages appear once imported; nothing else is public at the top
    assert public - {
        "errors",
        "progress",
        "io",
        "package",
        "runtime",
        "qc",
        "trust",
        "train",
        "zoo",
        "selection",
        "cli",
        "cli_zoo",
        "cli_select",
        "cli_learn",
        "cli_tour",
        "tour",
        "napari",
        "notebook",
        "TYPE_CHECKING",
        "Any",
        "annotations",
    } == {"MicrozooError", "load_model"}


def test_importing_microzoo_does_not_import_torch_or_the_spec() -> None:
    import subprocess
    import sys

    code = "import sys, microzoo; print('torch' in sys.modules, 'bioimageio.spec' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def _check_subpackage(name: str, expected: list[str]) -> None:
    """``microzoo.<name>`` re-exports exactly ``expected``, each defined in one of its modules,
    without importing torch or bioimageio.spec until a name is used."""
    import importlib
    import subprocess
    import sys

    package = importlib.import_module(f"microzoo.{name}")
    assert sorted(package.__all__) == sorted(expected)
    for member in package.__all__:
        value = getattr(package, member)
        if hasattr(value, "__module__"):  # functions and classes; constants such as IMAGE_SUFFIXES have none
            assert value.__module__.startswith(f"microzoo.{name}."), (member, value.__module__)
    code = f"import sys, microzoo.{name}; print('torch' in sys.modules, 'bioimageio.spec' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_runtime_api() -> None:
    _check_subpackage("runtime", [
        "Engine", "FileResult", "InstanceSettings", "Model", "ModelGeometry", "OutputComparison", "Outputs",
        "PackageSummary", "Pipeline", "Prediction", "StreamJob", "StreamResult", "Tile", "TilePlan",
        "available_formats", "bind_ops",
        "check_outputs", "choose_format", "compare_outputs", "convert_package", "describe_op", "extract_tile",
        "geometry_from_descr", "instances_from_output", "load_engine", "memory_budget", "output_paths", "parse_bytes",
        "plan_tiles", "predict_files", "predict_stream", "prepare_stream", "run_on_dask", "summarize",
        "test_package", "thread_count",
    ])  # fmt: skip


def test_io_api() -> None:
    _check_subpackage("io", [
        "AxesMapping", "IMAGE_SUFFIXES", "Image", "LazyArray", "OmeZarrWriter", "atomic_output", "check_axes",
        "find_images", "image_format", "image_identity", "image_shape", "image_stem", "list_images",
        "map_from_model", "map_to_model", "pair_by_stem",
        "read_array", "read_image", "rgb_to_grey", "select_channels", "to_grayscale", "write_image",
    ])  # fmt: skip


def test_qc_api() -> None:
    _check_subpackage("qc", [
        "Baseline", "Comparison", "Difference", "Estimate", "Evaluation", "ImageGroups", "QCTask", "TASKS",
        "Verdict", "baseline_verdict", "baselines_for", "compare", "denoise", "evaluate", "evaluate_folders",
        "find_groups", "get_task", "run_classical_on_folder", "segment", "read_evaluation", "tune_denoiser",
        "write_evaluation",
    ])  # fmt: skip


def test_trust_api() -> None:
    _check_subpackage("trust", [
        "Finding", "Fingerprint", "ImageTrust", "NearDuplicate", "OODResult", "TrustNote", "check_folders",
        "check_images", "find_near_duplicates", "fingerprint_images", "load_model_claims", "package_reference",
        "residual_structure", "run_checks", "trust_note",
    ])  # fmt: skip


def test_tour_api() -> None:
    _check_subpackage("tour", ["STEPS", "Picture", "StepResult", "Table", "TourResult", "run_tour"])


def test_selection_api() -> None:
    _check_subpackage("selection", [
        "Candidate", "Ranking", "Selection", "named_candidates", "rank_with_truth",
        "rank_without_truth", "select_models", "zoo_candidates",
    ])  # fmt: skip


def test_package_api() -> None:
    _check_subpackage("package", [
        "ModelPackage", "Problem", "ValidationReport", "architecture_callable", "cache_dir", "open_package",
        "validate_package",
    ])  # fmt: skip


def test_train_api() -> None:
    _check_subpackage("train", [
        "TASKS", "ExportSpec", "TrainingResult", "care_config", "export_package", "instances_config", "load_config",
        "n2v_config", "package_name", "predict_image", "save_config", "semantic_config", "short_form_config", "train",
    ])  # fmt: skip
    import microzoo.train

    assert set(microzoo.train.TASKS) == {"semantic", "instances", "care", "n2v"}


def test_zoo_api() -> None:
    _check_subpackage(
        "zoo", ["CommentInfo", "JobInfo", "SearchQuery", "SearchResult", "TokenInfo", "VersionInfo", "Zoo"]
    )


def test_notebook_api() -> None:
    _check_subpackage("notebook", [
        "LiveLossPlot", "Picture", "Pictures", "Table", "check_config", "check_package", "data_folder", "loss_figure",
        "output_folder", "predict_images", "qc_panels", "qc_table", "quick_config", "read_loss_csv", "show_data",
        "train_live", "zip_package",
    ])  # fmt: skip
