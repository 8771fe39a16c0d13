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
