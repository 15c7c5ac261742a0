"""pytest-benchmark suites: ``pytest benchmarks [--device cuda]`` collects every ``bench_*.py``
here (the files keep the name of the op they time) and runs its ``test_*`` functions."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=["cpu", "cuda"],
                     help="device the benchmarks run on")


def pytest_collect_file(file_path, parent):
    """bench_*.py as test modules (a file named on the command line pytest collects itself)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_sessionstart(session):
    """Stop with the cause and the fix when the stseq imported has no compiled extension."""
    from stseq._native import NATIVE, NATIVE_ERROR

    if NATIVE is None:
        pytest.exit(f"stseq's benchmarks need the compiled extension: {NATIVE_ERROR}",
                    returncode=4)


@pytest.fixture
def device(request):
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda but no CUDA device is available")
    return torch.device(name)
