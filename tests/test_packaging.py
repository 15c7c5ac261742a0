"""What a newcomer meets before any op runs: the LICENSE, the sdist, importing stseq without
torch, and the warning when the compiled extension cannot be loaded."""

import pathlib
import shutil
import subprocess
import sys
import tarfile
import tomllib

from stseq import _native

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(code, cwd):
    """Run ``code`` in a fresh interpreter in ``cwd`` (outside the checkout, so that the
    installed stseq is the one imported)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_license_is_the_apache_text_pyproject_declares():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:3] == ["Apache", "License", "Version"]
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply" in text
    assert len(text.splitlines()) == 202  # the standard text, whole


def test_sdist_leaves_out_untracked_files_of_the_checkout_root(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "runs", "out", "__pycache__", "*.so", ".pytest_cache"))
    (project / "events.csv").write_text("user,item,timestamp\n1,2,3\n")  # a user's data
    (project / "notes").mkdir()
    (project / "notes" / "todo.txt").write_text("x")
    (project / "stseq" / "_C.abi3.so").write_bytes(b"\0")  # an in-place build (gitignored)
    result = subprocess.run(
        [sys.executable, "-c", "from scikit_build_core.build import build_sdist; "
         f"print(build_sdist({str(tmp_path / 'dist')!r}))"],
        cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "dist" / result.stdout.split()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    tops = {name.split("/")[0] for name in names}
    assert tops == {"CMakeLists.txt", "LICENSE", "PKG-INFO", "README.md", "benchmarks", "csrc",
                    "pyproject.toml", "scripts", "stseq", "tests"}
    assert {"stseq/__init__.py", "csrc/bindings.cpp", "tests/conftest.py"} <= names
    assert not [name for name in names if name.endswith(".so") or "__pycache__" in name]


def test_importing_without_torch_says_which_torch_to_install(tmp_path):
    result = _python("import sys; sys.modules['torch'] = None; import stseq", tmp_path)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ModuleNotFoundError: stseq needs PyTorch")
    assert "pip install torch==2.13.0" in message and "built against" in message


def test_missing_extension_warns_once_and_native_says_why(tmp_path):
    code = """
import sys, warnings
sys.modules["stseq._C"] = None  # as in a checkout whose extension is not built
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import stseq
    import torch
    stseq.nn.TimeGapEmbedding(8, 4, window=2)(torch.tensor([[0, 5, 60]]))  # runs the reference
print(len([w for w in caught if w.category is stseq.NativeUnavailableWarning]))
print(caught[0].message)
try:
    stseq.ops.time_gap_embedding(torch.tensor([[0, 1]]), torch.zeros(1, 2, 2), backend="native")
except stseq.BackendUnavailableError as error:
    print(error)
"""
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    count, warning, error = result.stdout.strip().splitlines()
    assert count == "1"
    fix = "pip install --no-build-isolation --no-deps"
    assert "stseq._C" in warning and "slow pure-PyTorch reference" in warning and fix in warning
    assert error.startswith("backend 'native' is unavailable for time_gap_embedding on cpu")
    assert "stseq._C" in error and fix in error


def test_failure_messages_name_the_cause_and_the_fix(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "csrc").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    error = ImportError("cannot import name '_C'")
    shadowed = _native.describe_failure(error, checkout / "stseq", None)
    assert f"imported from the source checkout {checkout}" in shadowed
    assert f"cd {checkout} && {_native.DEVELOPER_SETUP}" in shadowed
    not_built = _native.describe_failure(error, tmp_path / "site-packages" / "stseq", None)
    assert "has no compiled stseq._C" in not_built and "--force-reinstall" in not_built

    class Spec:
        origin = "/x/stseq/_C.so"

    broken = _native.describe_failure(ImportError("undefined symbol: foo"), checkout, Spec())
    assert "/x/stseq/_C.so) failed to load: undefined symbol: foo" in broken
    assert "another torch" in broken and _native.DEVELOPER_SETUP in broken


def test_the_suite_stops_at_once_without_the_extension(tmp_path):
    test_file = str(ROOT / "tests" / "test_info.py")
    code = ("import sys, pytest; sys.modules['stseq._C'] = None; "
            f"sys.exit(pytest.main(['-p', 'no:cacheprovider', {test_file!r}]))")
    result = _python(code, tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "stseq's tests need the compiled extension: " in result.stdout + result.stderr
    assert "passed" not in result.stdout and "failed" not in result.stdout
