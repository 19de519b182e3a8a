"""Widget helpers: controls wired to a figure, so a chapter's interactive parts stay short."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure


class Explorer(widgets.VBox):
    """Controls above an output area: changing any control calls `draw(**values)` again.

    `draw` returns a matplotlib Figure (shown in the output area) or None. After each call the
    explorer keeps `.values` (what the controls held) and `.figure`, so a notebook cell can set
    `explorer.controls["k"].value = 3` and assert on what changed.
    """

    def __init__(self, draw: Callable[..., Figure | None], **controls: widgets.ValueWidget) -> None:
        if not controls:
            raise ValueError("Explorer needs at least one control, e.g. k=widgets.IntSlider(...)")
        self.draw, self.controls = draw, controls
        self.output = widgets.Output()
        self.values: dict[str, object] = {}
        self.figure: Figure | None = None
        self.redraws = 0
        super().__init__([widgets.HBox(list(controls.values())), self.output])
        for control in controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, change: object = None) -> None:
        """Redraw with the controls' current values."""
        self.values = {name: control.value for name, control in self.controls.items()}
        with self.output:
            self.output.clear_output(wait=True)
            self.figure = self.draw(**self.values)
            if isinstance(self.figure, Figure):
                display(self.figure)
                plt.close(self.figure)
        self.redraws += 1


def slider(value: float, low: float, high: float, step: float, description: str) -> widgets.FloatSlider:
    """A float slider wide enough to read its label and value."""
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                               continuous_update=False, style={"description_width": "initial"},
                               layout=widgets.Layout(width="360px"))
