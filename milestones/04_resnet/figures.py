"""The committed figures of 04_resnet and the runs they are drawn from:

    python -m milestones.04_resnet.figures      # redraws each from its run record under results/
    python -m milestones.04_resnet.figures figure6 <run dir> <png>   # from any degradation run
"""

import json
from pathlib import Path

from common.plot import redraw_main

from .figure6 import draw, read_curves, title


def redraw_figure6(run, png) -> Path:
    """Figure 6 from a degradation run's metrics.jsonl, titled from its config.json and summary.json."""
    run = Path(run)
    config = json.loads((run / "config.json").read_text())["config"]
    epochs = json.loads((run / "summary.json").read_text()).get("epochs")
    return draw(read_curves(run / "metrics.jsonl"), png, title(config, epochs))


DRAW = {"figure6": redraw_figure6}
COMMITTED = {"figure6_quick_4000steps_width4_seed0.png": ("figure6", "results/04_resnet/20261207-023128-degradation")}

if __name__ == "__main__":
    redraw_main(__file__, DRAW, COMMITTED)
