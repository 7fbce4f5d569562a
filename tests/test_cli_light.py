"""`segcal --help`, `--version`, `<command> --help` and config validation start without heavy imports,
and importing segcal switches no matplotlib backend."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "monai", "matplotlib", "sklearn", "scipy")


SLOW = pytest.mark.slow  # one fresh interpreter each: the most used ones run in `make test`, all in CI


@pytest.mark.parametrize("args", [["--help"], ["calibrate", "--help"], ["config", "demo"],
                                  pytest.param(["--version"], marks=SLOW),
                                  pytest.param(["train", "--help"], marks=SLOW),
                                  pytest.param(["evaluate", "--help"], marks=SLOW),
                                  pytest.param(["refine", "--help"], marks=SLOW)])
def test_no_heavy_imports(args):
    code = (f"import sys\nfrom segcal.cli.main import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_importing_the_plots_keeps_the_users_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import segcal.plots.conformal, segcal.plots.calibration, "
            "segcal.plots.training, segcal.plots.refinement; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_method_names_match_the_registries():
    from segcal.calibrators import CALIBRATORS
    from segcal.conformal.grouping import get_grouping
    from segcal.methods import CONFORMAL_METHODS, RECALIBRATION_METHODS

    assert tuple(CALIBRATORS) == RECALIBRATION_METHODS
    for grouping, _ in CONFORMAL_METHODS.values():
        if grouping != "local":  # the local method pools windows, not groups (LocalCalibrator)
            assert get_grouping(grouping).name == grouping
