"""Shared code for the course "AI large models, from the ground up".

Chapters show the model and the idea; `lib` holds what would otherwise repeat. Each function is short
enough to read in a minute: open the module and look.
"""

from . import check, data, results, runtime, train, viz, widgets
from .check import close, model_answer, self_check
from .data import Batches, ImageSplit, load_digits
from .results import save_results
from .runtime import banner, get_device, get_profile, pick, seed_everything, synchronize
from .train import accuracy, autocast, checkpoint_path, fit, predict, prepare_model, supervised_step
from .viz import History, image_grid


def setup(seed: int = 0, dataset: str | None = "mnist"):
    """A chapter's first call: start the chapter clock, seed, set threads, print the banner; return the device.

    In the full profile it first fetches `dataset` (None: the chapter needs none), and switches the run to
    the standard profile if that fails, before the chapter picks its settings.
    """
    results.start_clock()
    if dataset is not None and runtime.get_profile() == "full":
        data.ensure_full_data(dataset)
    return runtime.setup(seed)


__all__ = [
    "Batches", "History", "ImageSplit", "accuracy", "autocast", "banner", "check", "checkpoint_path", "close",
    "data", "fit", "get_device", "get_profile", "image_grid", "load_digits", "model_answer", "pick", "predict",
    "prepare_model", "results", "runtime", "save_results", "seed_everything", "self_check", "setup",
    "supervised_step", "synchronize", "train", "viz", "widgets",
]
