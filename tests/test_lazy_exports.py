"""A subpackage's verb named like its module (``microzoo.qc.evaluate``) stays the verb, whatever was
imported first (found by the docs harness: quality-control.md's example got the module)."""

import subprocess
import sys


def _run(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_a_verb_named_like_its_module_is_the_verb_whatever_the_import_order() -> None:
    check = "print(callable(evaluate), evaluate.__module__, callable(compare), compare.__module__)"
    expected = ["True", "microzoo.qc.evaluate", "True", "microzoo.qc.compare"]
    modules_first = "import microzoo.qc.evaluate, microzoo.qc.compare\nfrom microzoo.qc import evaluate, compare\n"
    verbs_first = "from microzoo.qc import evaluate, compare\nimport microzoo.qc.evaluate, microzoo.qc.compare\n"
    assert _run(modules_first + check) == expected
    assert _run(verbs_first + check + "\nfrom microzoo.qc.evaluate import Evaluation; print(Evaluation.__name__)") == [
        *expected,
        "Evaluation",
    ]
