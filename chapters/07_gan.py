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
# # 07 · Generative adversarial networks: a game between two networks
#
# An autoencoder (chapter 05) copies its input; a VAE (chapter 06) learns a probability model you can sample
# from, but its samples are blurry. A **generative adversarial network (生成对抗网络, GAN)** takes a different
# route: it never writes down a likelihood at all. A **generator (生成器)** turns random noise into images, a
# **discriminator (判别器)** tries to tell those images from real ones, and each network trains against the
# other. When the game goes well the generator's images become hard to tell from real ones; when it goes
# badly, it collapses or oscillates. This chapter builds both outcomes and measures them.
#
# **Goals**
# 1. Write the minimax objective, derive the optimal discriminator $D^* = p_\text{data}/(p_\text{data}+p_g)$ and
#    check it numerically on 1-D distributions, including the Jensen–Shannon connection.
# 2. Compute the saturating and non-saturating generator losses and their gradients near $D(G(z)) = 0$, plot
#    them, and check the `BCEWithLogits` forms of every GAN loss against the formulas.
# 3. Train a 2-D GAN on a mixture of Gaussians, healthy and collapsed, and count the modes it covers.
# 4. Train a DCGAN on real MNIST digits with the course's shared `lib.fit` loop, with and without the R1 gradient
#    penalty, and evaluate it with a digit classifier trained here: class coverage and a Fréchet distance in the
#    classifier's feature space.
# 5. Watch the training dynamics, scrub through a fixed-noise sample grid epoch by epoch, interpolate in the
#    latent space, and see what GANs are used for and where they fail.
#
# **Time:** quick ≈ 30 s · standard ≈ 2 min on 2 CPU cores · full (GPU, full MNIST) ≈ 3 min.

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import scipy.spatial.distance
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from torch import nn

import lib

device = lib.setup(seed=0)

# %% [markdown]
# Everything that changes with the profile is in the next cell. `gan_epochs` is the number of passes of the
# DCGAN over the training digits (1,000 in quick, 3,500 in standard, 55,000 in full), `gan_lr` the Adam learning
# rate of both networks and `r1_gamma` the weight of the discriminator's gradient penalty (§6); the toy GAN runs
# are measured in passes over a fixed sample of the toy distribution. `fd_samples` is the size of every sample
# that enters a Fréchet distance (§6): generated and real sets are always the same size, because the distance
# between two finite samples depends on how large they are.

# %%
SETTINGS = {
    "quick": dict(gan_epochs=6, gan_batch=64, width=32, z_dim=32, gan_lr=4e-4, r1_gamma=10.0,
                  classifier_epochs=10, toy_epochs=16, fd_samples=500),
    "standard": dict(gan_epochs=30, gan_batch=64, width=32, z_dim=32, gan_lr=4e-4, r1_gamma=10.0,
                     classifier_epochs=6, toy_epochs=16, fd_samples=500),
    "full": dict(gan_epochs=10, gan_batch=128, width=64, z_dim=64, gan_lr=2e-4, r1_gamma=10.0,
                 classifier_epochs=6, toy_epochs=16, fd_samples=5000),
}
BARS = {  # what the chapter asserts at the end of training (r1_helps: R1 raises the smallest digit share)
    "quick": dict(classifier_accuracy=0.85, class_coverage_min=0.0, fd_ratio=0.9, toy_modes=4, r1_helps=False),
    "standard": dict(classifier_accuracy=0.95, class_coverage_min=0.04, fd_ratio=0.5, toy_modes=6, r1_helps=True),
    "full": dict(classifier_accuracy=0.98, class_coverage_min=0.05, fd_ratio=0.3, toy_modes=6, r1_helps=False),
}
S, BAR = lib.pick(SETTINGS), lib.pick(BARS)
print(lib.get_profile(), S, "\nbars:", BAR)

# %% [markdown]
# ## 1 · Concepts
#
# * A **generative model (生成模型)** learns a distribution $p_g$ that imitates the data distribution
#   $p_\text{data}$, so that new samples look like the training data.
# * The **generator** $G$ maps a **latent vector (潜在向量)** $z \sim p_z$ (here standard normal noise) to a sample
#   $G(z)$. It defines $p_g$ only *implicitly*: you can draw from it, but you cannot evaluate $p_g(x)$.
# * The **discriminator** $D$ maps a sample to the probability $D(x)$ that it is real rather than generated.
#   It is an ordinary binary classifier; in code it returns a **logit** $\ell$ with $D(x) = \sigma(\ell)$, which here is the
#   **log-odds (对数几率)** $\ell = \log\frac{D(x)}{1 - D(x)}$ that $x$ is real.
# * **Adversarial training (对抗训练)** alternates: one step makes $D$ a better judge, the next makes $G$ a better
#   forger against the *current* $D$. The two play a **minimax game (极小极大博弈)**; its ideal end point is a
#   **Nash equilibrium (纳什均衡)** where $p_g = p_\text{data}$ and $D = \tfrac12$ everywhere.
# * **Mode collapse (模式崩溃)**: the generator covers only a few of the data's modes (say, a few digit classes),
#   because fooling today's discriminator does not require diversity.
# * A **DCGAN (深度卷积生成对抗网络)** uses transposed convolutions in $G$ and strided convolutions in $D$.
#
# **Common pitfalls** (each appears in published tutorial code): the generator's output size does not match
# the discriminator's input size; the discriminator returns a map of scores instead of one logit per image;
# `sigmoid` followed by `BCELoss` (numerically fragile); losses with the wrong sign, so that a "minimised"
# objective should have been maximised; the discriminator trained only on real images; and random tensors used
# as "real" data. The first four are demonstrated and asserted below (§6 runs a buggy generator and checks the
# discriminator's output shape, §4 measures the lost gradient and the wrong sign); the last two are avoided by
# construction: the one training step of §5 shows the discriminator a real and a generated batch every time,
# and the real data are MNIST digits.

# %% [markdown]
# ## 2 · The minimax objective
#
# Goodfellow et al. (2014) define one value function that $D$ maximises and $G$ minimises:
#
# $$ \min_G \max_D \; V(D, G) = \mathbb{E}_{x\sim p_\text{data}}\big[\log D(x)\big]
#    + \mathbb{E}_{z\sim p_z}\big[\log\big(1 - D(G(z))\big)\big]. $$
#
# Note where the expectations live: the first is over real data, the second over **noise** $z$ (the fake sample
# is $G(z)$; it is not "$x \sim p_z$"). With logits, $\log\sigma(\ell) = -\operatorname{softplus}(-\ell)$ and
# $\log(1-\sigma(\ell)) = -\operatorname{softplus}(\ell)$, so on a batch the estimate of $V$ is
#
# $$ \hat V = -\frac1m\sum_i \operatorname{softplus}(-\ell^\text{real}_i) - \frac1m\sum_j \operatorname{softplus}(\ell^\text{fake}_j), $$
#
# and the discriminator's loss, the binary cross-entropy with label 1 for real and 0 for fake, is exactly
# $-\hat V$: *minimising* the discriminator's loss is *maximising* $V$. We check this on a real batch of digits
# with an untrained discriminator and generator (the definitions come in §6; here any two networks will do).

# %%
split = lib.load_digits().to(device)
print(split)


def to_gan_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels → [-1, 1], the range of the generator's tanh output."""
    return images * 2 - 1


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generator output → [0, 1] pixels (for plots and the classifier)."""
    return (images + 1) / 2


torch.manual_seed(0)
toy_d = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)).to(device)
toy_g = nn.Sequential(nn.Linear(16, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28))).to(device)
real_batch = to_gan_range(split.train_x[:64])
with torch.no_grad():
    real_logits = toy_d(real_batch).squeeze(1)
    fake_logits = toy_d(toy_g(torch.randn(64, 16, device=device))).squeeze(1)
    D_real, D_fake = torch.sigmoid(real_logits), torch.sigmoid(fake_logits)

V_by_hand = torch.log(D_real).mean() + torch.log(1 - D_fake).mean()
V_softplus = -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()
d_loss_bce = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
lib.close(V_softplus, V_by_hand, "V from logits (softplus) vs from probabilities", rtol=1e-5)
lib.close(d_loss_bce, -V_by_hand, "discriminator BCE loss = -V", rtol=1e-5)
print(f"V = {V_by_hand.item():.4f}; a discriminator that knows nothing (D = 1/2 everywhere) scores -log 4 = {-math.log(4):.4f}")

# %% [markdown]
# ## 3 · The optimal discriminator, checked on 1-D distributions
#
# For a fixed generator, $V$ is an integral over $x$ of $p_\text{data}(x)\log D(x) + p_g(x)\log(1-D(x))$. At each
# point, $a\log y + b\log(1-y)$ with $a, b > 0$ is maximised at $y = a/(a+b)$ (set the derivative
# $a/y - b/(1-y)$ to zero). So
#
# $$ D^*(x) = \frac{p_\text{data}(x)}{p_\text{data}(x) + p_g(x)}, \qquad
#    V(D^*, G) = -\log 4 + 2\,\mathrm{JSD}(p_\text{data}\,\|\,p_g), $$
#
# where JSD is the **Jensen–Shannon divergence (JS 散度)**. The generator, facing the best discriminator,
# minimises a divergence between the two distributions, and the minimum $-\log 4$ is reached only when
# $p_g = p_\text{data}$ (then $D^* = \tfrac12$ everywhere).
#
# Three checks: the pointwise maximiser by brute force; $V(D^*,G)$ by numerical integration against
# `scipy.spatial.distance.jensenshannon`; and a small discriminator *trained on samples* (with the same loss
# as in §2) that should land on $D^*$. The distributions are explicit 1-D densities, not data:
# $p_\text{data}$ a mixture of two Gaussians and $p_g$ a single, badly placed Gaussian.

# %%
a, b = torch.tensor(0.7), torch.tensor(0.2)
ys = torch.linspace(1e-4, 1 - 1e-4, 100_001)
brute = ys[torch.argmax(a * ys.log() + b * (1 - ys).log())]
lib.close(brute, a / (a + b), "argmax_y a·log y + b·log(1-y) vs a/(a+b)", atol=1e-4)


def normal_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Density of N(mean, std²) at x."""
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def p_data(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * normal_pdf(x, -1.0, 0.4) + 0.5 * normal_pdf(x, 1.5, 0.6)


def p_g(x: torch.Tensor) -> torch.Tensor:
    return normal_pdf(x, 0.5, 0.8)


def optimal_discriminator(x: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data / (p_data + p_g)."""
    return p_data(x) / (p_data(x) + p_g(x))


grid = torch.linspace(-6, 7, 130_001, dtype=torch.float64)
dx = grid[1] - grid[0]
pd_, pg_, d_star = p_data(grid), p_g(grid), optimal_discriminator(grid)
V_star = ((pd_ * d_star.log() + pg_ * (1 - d_star).log()) * dx).sum()
jsd = scipy.spatial.distance.jensenshannon(pd_.numpy(), pg_.numpy()) ** 2  # scipy returns the square root
lib.close(V_star, -math.log(4) + 2 * jsd, "V(D*, G) vs -log 4 + 2·JSD (scipy)", rtol=1e-6)
for other in (0.5 * torch.ones_like(grid), (d_star * 0.9 + 0.05)):
    assert ((pd_ * other.log() + pg_ * (1 - other).log()) * dx).sum() < V_star, "D* must beat any other D"
print(f"V(D*, G) = {V_star.item():.4f}, JSD = {jsd:.4f} nats (log 2 = {math.log(2):.4f} is the maximum)")

# %% [markdown]
# Now the numerical check that matters in practice: a discriminator network that only ever sees *samples*
# from the two distributions, trained with the discriminator loss from §2 through the course's `lib.fit` loop.

# %%
def sample_p_data(n: int, generator: torch.Generator) -> torch.Tensor:
    which = torch.rand(n, generator=generator) < 0.5
    return torch.where(which, -1.0 + 0.4 * torch.randn(n, generator=generator),
                       1.5 + 0.6 * torch.randn(n, generator=generator))


def discriminator_step(model: nn.Module, optimizer: torch.optim.Optimizer):
    """A `lib.fit` step that trains only the discriminator: real samples → 1, generated samples → 0."""
    def step(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        real_logits, fake_logits = model(real).squeeze(1), model(fake).squeeze(1)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}
    return step


rng = torch.Generator().manual_seed(0)
n_1d = 20_000
real_1d = sample_p_data(n_1d, rng).unsqueeze(1)
fake_1d = (0.5 + 0.8 * torch.randn(n_1d, generator=rng)).unsqueeze(1)
torch.manual_seed(0)
d_1d = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
opt_1d = torch.optim.Adam(d_1d.parameters(), lr=3e-3)
history_1d = lib.fit(discriminator_step(d_1d, opt_1d), lib.Batches(real_1d, fake_1d, batch_size=500, seed=0),
                     epochs=12, live=False, progress=False)

xs = torch.linspace(-2.5, 3.5, 601)
with torch.no_grad():
    learned = torch.sigmoid(d_1d(xs.unsqueeze(1))).squeeze(1)
target = optimal_discriminator(xs)
weight = p_data(xs) + p_g(xs)  # judge the fit where there is probability mass
weighted_error = ((learned - target).abs() * weight).sum() / weight.sum()
print(f"density-weighted mean |D_learned - D*| = {weighted_error:.4f}")
assert weighted_error < 0.03, "the trained discriminator should land on D* = p_data / (p_data + p_g)"

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
left.plot(xs, p_data(xs), label="$p_{data}$ (two Gaussians)")
left.plot(xs, p_g(xs), label="$p_g$ (one Gaussian)")
left.set(xlabel="x", ylabel="density", title="two 1-D distributions")
left.legend()
right.plot(xs, target, lw=3, alpha=0.6, label="$D^*$ = $p_{data}/(p_{data}+p_g)$")
right.plot(xs, learned, "--", label="discriminator trained on samples")
right.axhline(0.5, color="gray", lw=0.8)
right.set(xlabel="x", ylabel="D(x)", ylim=(0, 1), title="the optimal discriminator")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4 · Saturating vs non-saturating generator losses
#
# Taken literally, the minimax game asks $G$ to minimise $\mathbb{E}_z[\log(1-D(G(z)))]$, the **saturating**
# loss. Early in training $D$ easily rejects the fakes, $D(G(z)) \approx 0$, and there this loss is flat.
# In terms of the logit $\ell$ that the network actually outputs ($D = \sigma(\ell)$):
#
# $$ L_\text{sat}(\ell) = \log\big(1-\sigma(\ell)\big) = -\operatorname{softplus}(\ell), \qquad
#    \frac{\partial L_\text{sat}}{\partial \ell} = -\sigma(\ell) = -D \;\xrightarrow{D\to 0}\; 0 , $$
#
# $$ L_\text{ns}(\ell) = -\log\sigma(\ell) = \operatorname{softplus}(-\ell), \qquad
#    \frac{\partial L_\text{ns}}{\partial \ell} = -\big(1-\sigma(\ell)\big) = -(1-D) \;\xrightarrow{D\to 0}\; -1 . $$
#
# The **non-saturating** loss $-\mathbb{E}_z[\log D(G(z))]$ has the same fixed point (both push $D(G(z))$ up) but
# a strong gradient exactly where the generator is worst. It is what practically every GAN uses, and in code
# it is simply "binary cross-entropy of the fakes with label 1".
#
# A sign pitfall: writing the generator loss as $+\mathbb{E}_z[\log D(G(z))]$ and *minimising* it pushes
# $D(G(z))$ **down**, training the generator to be caught. Its gradient has the opposite sign, asserted below.

# %%
logits = torch.linspace(-12, 12, 241, requires_grad=True)
sat_loss = torch.log1p(-torch.sigmoid(logits))  # log(1 - D), the literal minimax term
ns_loss = -F.logsigmoid(logits)                  # -log D
wrong_loss = F.logsigmoid(logits)                # +log D, minimised: the sign pitfall
sat_grad, = torch.autograd.grad(sat_loss.sum(), logits)
ns_grad, = torch.autograd.grad(ns_loss.sum(), logits)
wrong_grad, = torch.autograd.grad(wrong_loss.sum(), logits)
D_vals = torch.sigmoid(logits.detach())

lib.close(sat_grad, -D_vals, "d L_sat / d logit = -D", rtol=1e-4, atol=1e-6)
lib.close(ns_grad, -(1 - D_vals), "d L_ns / d logit = -(1 - D)", rtol=1e-4, atol=1e-6)
assert (wrong_grad > 0).all(), "minimising +log D(G(z)) moves the logit down: the generator learns to lose"
at = torch.argmin((D_vals - 1e-3).abs())
print(f"at D(G(z)) = {D_vals[at]:.1e}: |grad| saturating {sat_grad[at].abs():.1e}, "
      f"non-saturating {ns_grad[at].abs():.3f}, ratio {ns_grad[at].abs() / sat_grad[at].abs():.0f}x")
assert ns_grad[at].abs() / sat_grad[at].abs() > 500

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
left.plot(D_vals, sat_loss.detach(), label=r"saturating: $\log(1-D)$ (minimise)")
left.plot(D_vals, ns_loss.detach(), label=r"non-saturating: $-\log D$ (minimise)")
left.set(xlabel="D(G(z))", ylabel="generator loss", title="two generator losses, same goal")
left.legend()
right.semilogx(D_vals, sat_grad.abs(), label="saturating")
right.semilogx(D_vals, ns_grad.abs(), label="non-saturating")
right.set(xlabel="D(G(z))  (log scale)", ylabel="|d loss / d logit|", title="gradient where the generator is bad")
right.axvspan(D_vals.min(), 1e-2, color="tab:red", alpha=0.08)
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The losses as `BCEWithLogits`, and why not `sigmoid` + `BCELoss`
#
# With $\operatorname{BCE}(\ell, y) = -[y\log\sigma(\ell) + (1-y)\log(1-\sigma(\ell))]$:
#
# | loss | formula | PyTorch |
# |---|---|---|
# | discriminator | $-\log D(x) - \log(1-D(G(z)))$ | `bce(real_logits, 1) + bce(fake_logits, 0)` |
# | generator, non-saturating | $-\log D(G(z))$ | `bce(fake_logits, 1)` |
# | generator, saturating | $\log(1-D(G(z)))$ | `-bce(fake_logits, 0)` |
#
# We check each against its formula, on logits that include very confident ones. Computing $\sigma$ first and
# then `F.binary_cross_entropy` breaks there: $\sigma(-120)$ underflows to 0 in float32, PyTorch clamps
# $\log 0$ to $-100$, and the gradient that should be $-1$ becomes $0$.

# %%
def bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against one constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


ell_real = torch.tensor([-120.0, -8.0, -1.0, 0.0, 2.0, 30.0])
ell_fake = torch.tensor([-30.0, -3.0, 0.5, 1.0, 8.0, 120.0])
lib.close(bce(ell_real, 1) + bce(ell_fake, 0),
          F.softplus(-ell_real).mean() + F.softplus(ell_fake).mean(), "D loss: BCE-with-logits vs softplus formula")
lib.close(bce(ell_fake, 1), -F.logsigmoid(ell_fake).mean(), "G non-saturating loss vs -log D")
lib.close(-bce(ell_fake, 0), F.logsigmoid(-ell_fake).mean(), "G saturating loss vs log(1 - D) = log σ(-ℓ)")

far = torch.tensor([-120.0], requires_grad=True)
grad_logits, = torch.autograd.grad(bce(far, 1), far)
grad_probs, = torch.autograd.grad(F.binary_cross_entropy(torch.sigmoid(far), torch.ones(1)), far)
print(f"gradient at logit -120, label 1: with logits {grad_logits.item():+.3f}, sigmoid + BCELoss {grad_probs.item():+.3f}")
lib.close(grad_logits, torch.tensor([-1.0]), "BCE-with-logits gradient = sigmoid(l) - y")
assert grad_probs.abs().item() < 1e-6, "sigmoid + BCELoss loses the gradient for confident logits"

# %% [markdown]
# ## 5 · A 2-D toy GAN: healthy training and mode collapse
#
# Before images, a distribution we can see: eight Gaussians on a ring (a standard test, explicitly synthetic). A
# generated point is *good* if it lies within 3 standard deviations of a centre, and a mode is *covered* if at
# least a quarter of its fair share ($\tfrac14\cdot\tfrac18$) of the samples land on it.
#
# The training step below is the one every GAN in this chapter uses, the MNIST DCGAN included; `lib.fit`
# calls it once per batch, as it calls a classifier's step. Each call updates $D$ on a real batch and a fake
# batch, then updates $G$ with the non-saturating loss against the *updated* $D$. `fake.detach()` keeps the
# discriminator's update from reaching into the generator. The noise $z$ comes from its own random generator,
# which `lib.fit` saves in the checkpoint, so a resumed run draws the same noise as an uninterrupted one.
# `r1_gamma` adds a gradient penalty to the discriminator's loss, which the MNIST DCGAN needs and §6 explains
# (`r1_penalty` is defined and checked there).

# %%
def make_gan_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, z_dim: int, noise: torch.Generator, r1_gamma: float = 0.0):
    """A `lib.fit` step for a GAN: one discriminator update, then one generator update.

    `noise` is the random generator (on the models' device) that draws z; pass it to `lib.fit` in `state=` so
    that a resumed run continues the same noise stream. Returns {"loss", "d_loss", "g_loss", "d_real",
    "d_fake"}, with d_real = mean D(x) and d_fake = mean D(G(z)), plus "r1" when the discriminator's loss
    carries the R1 penalty (r1_gamma > 0). Mixed precision on CUDA through `lib.autocast`, with loss scaling
    when the GPU has no native bfloat16.
    """
    device = next(generator.parameters()).device
    fp16 = device.type == "cuda" and not lib.train.native_bf16(device)
    scale_d, scale_g = torch.amp.GradScaler(device.type, enabled=fp16), torch.amp.GradScaler(device.type, enabled=fp16)

    def step(real: torch.Tensor) -> dict[str, torch.Tensor]:
        generator.train()
        discriminator.train()
        z = torch.randn(len(real), z_dim, device=device, generator=noise)
        if r1_gamma:
            real = real.detach().requires_grad_(True)      # the R1 penalty differentiates D(x) with respect to x
        with lib.autocast(device):
            fake = generator(z)
            real_logits = discriminator(real)
            fake_logits = discriminator(fake.detach())     # no gradient into G from D's loss
            d_loss = bce(real_logits, 1) + bce(fake_logits, 0)
        penalty = r1_penalty(real_logits, real, r1_gamma) if r1_gamma else torch.zeros((), device=device)
        opt_d.zero_grad(set_to_none=True)
        scale_d.scale(d_loss + penalty).backward()
        scale_d.step(opt_d)
        scale_d.update()
        with lib.autocast(device):
            g_loss = bce(discriminator(fake), 1)           # non-saturating: -log D(G(z))
        opt_g.zero_grad(set_to_none=True)
        scale_g.scale(g_loss).backward()                   # (also fills D's .grad; D zeroes it before its step)
        scale_g.step(opt_g)
        scale_g.update()
        return {"loss": (d_loss + g_loss).detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
                "d_fake": torch.sigmoid(fake_logits.detach().float()).mean(),
                **({"r1": penalty.detach()} if r1_gamma else {})}

    return step


class Snapshots:
    """The generator's output for one fixed batch of noise, once per epoch: training as a flip-book.

    It has `state_dict`/`load_state_dict`, so `lib.fit` checkpoints it with the models and a resumed run keeps
    the frames of the epochs it already did.
    """

    def __init__(self, z: torch.Tensor) -> None:
        self.z, self.frames = z, []

    @torch.no_grad()
    def take(self, generator: nn.Module) -> torch.Tensor:
        generator.eval()
        frame = generator(self.z).float().cpu()
        generator.train()
        self.frames.append(frame)
        return frame

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"frames": torch.stack(self.frames) if self.frames else torch.empty(0)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.frames = list(state["frames"])

# %% [markdown]
# The toy data and its two metrics:

# %%
RING_MODES, RING_RADIUS, RING_STD = 8, 2.0, 0.05
ring_centres = torch.stack([torch.tensor([math.cos(a), math.sin(a)]) * RING_RADIUS
                            for a in torch.arange(RING_MODES) * 2 * math.pi / RING_MODES])


def sample_ring(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points from the mixture of eight Gaussians on a circle of radius 2 (std 0.05)."""
    which = torch.randint(0, RING_MODES, (n,), generator=generator)
    return ring_centres[which] + RING_STD * torch.randn(n, 2, generator=generator)


def ring_metrics(points: torch.Tensor) -> dict[str, float]:
    """Share of points within 3 std of a centre ("quality") and how many modes get ≥ 1/4 of their share."""
    distance, nearest = torch.cdist(points.float().cpu(), ring_centres).min(dim=1)
    good = distance < 3 * RING_STD
    share = torch.bincount(nearest[good], minlength=RING_MODES).float() / len(points)
    return {"modes": float((share >= 0.25 / RING_MODES).sum()), "quality": good.float().mean().item()}


ring_data = sample_ring(25_600, torch.Generator().manual_seed(0)).to(device)
real_ring = ring_metrics(ring_data)
assert real_ring["modes"] == 8 and real_ring["quality"] > 0.98  # real samples: all modes, ~99.7% within 3 std
print("the real ring itself:", real_ring)

# %% [markdown]
# Two runs with the same networks (two hidden layers of 64 units), the same data, the same seed and the same
# number of epochs; they differ only in the Adam learning rates. The **balanced** run uses 0.002 for both
# networks. The **collapsing** run takes steps 25× larger for the generator (0.05) and 10× larger for the
# discriminator (0.02). Nothing in the generator's loss rewards diversity: each step moves its samples towards
# wherever the current discriminator scores highest. With large steps the generator moves *all* its samples
# into the few modes the discriminator favours right now; the discriminator then learns that those modes are
# full of fakes and favours others, and the generator jumps there.
#
# Few modes alone do not prove collapse: early in training every GAN covers few modes, because its samples are
# not yet near any mode. Collapse means few modes **and** good samples. So both runs are judged at the same
# epochs, over the second half of training (the median, because a collapsing run hops), on both numbers:
# the share of samples within 3 std of a centre ("quality") and the number of modes covered.

# %%
def ring_mlp(inputs: int, outputs: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def train_ring_gan(g_lr: float, d_lr: float, epochs: int, seed: int = 0) -> tuple[lib.History, Snapshots]:
    """Train a 2-D GAN on the ring with `lib.fit`; return its history and fixed-noise snapshots per epoch."""
    torch.manual_seed(seed)
    generator = ring_mlp(8, 2).to(device)
    discriminator = nn.Sequential(ring_mlp(2, 1), nn.Flatten(0)).to(device)  # (N, 1) → one logit per point (N,)
    opt_g = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=(0.5, 0.999))
    snapshots = Snapshots(torch.randn(2000, 8, generator=torch.Generator().manual_seed(1)).to(device))
    noise = torch.Generator(device=device).manual_seed(seed)
    step = make_gan_step(generator, discriminator, opt_g, opt_d, z_dim=8, noise=noise)
    history = lib.fit(step, lib.Batches(ring_data, batch_size=256, seed=seed), epochs,
                      evaluate=lambda: ring_metrics(snapshots.take(generator)), live=False, progress=False)
    return history, snapshots


def late_median(history: lib.History, key: str) -> float:
    """Median of a metric over the second half of the epochs."""
    values = history[key]
    return float(np.median(values[len(values) // 2:]))


ring_balanced, ring_balanced_frames = train_ring_gan(g_lr=2e-3, d_lr=2e-3, epochs=S["toy_epochs"])
ring_collapsed, ring_collapsed_frames = train_ring_gan(g_lr=5e-2, d_lr=2e-2, epochs=S["toy_epochs"])
toy_modes_balanced, toy_modes_collapsed = late_median(ring_balanced, "modes"), late_median(ring_collapsed, "modes")
toy_quality_balanced, toy_quality_collapsed = late_median(ring_balanced, "quality"), late_median(ring_collapsed, "quality")
print(f"second half of {S['toy_epochs']} epochs, medians: balanced {toy_modes_balanced:.1f} of 8 modes, quality "
      f"{toy_quality_balanced:.2f}; large steps {toy_modes_collapsed:.1f} of 8 modes, quality {toy_quality_collapsed:.2f}")
assert toy_modes_balanced >= BAR["toy_modes"], "the balanced toy GAN should cover most of the eight modes"
assert toy_quality_collapsed >= 0.6, "the collapsing run's samples should sit on modes (else it is just bad)"
assert toy_modes_collapsed <= 3, "the collapsing run should cover only a few of the eight modes"

# %%
def plot_ring_frames(frames: list[torch.Tensor], label: str, axes) -> None:
    """Scatter a few epochs of fixed-noise samples over the real ring."""
    picks = sorted({0, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1})
    for ax, epoch in zip(axes, picks, strict=False):
        ax.scatter(*ring_data[:1500].cpu().T, s=2, c="lightgray")
        ax.scatter(*frames[epoch][:800].T, s=2, c="tab:blue")
        m = ring_metrics(frames[epoch])
        ax.set(xlim=(-3, 3), ylim=(-3, 3), xticks=[], yticks=[], aspect="equal",
               title=f"{label}, epoch {epoch + 1}\n{m['modes']:.0f} modes, quality {m['quality']:.2f}")


fig, axes = plt.subplots(2, 5, figsize=(15, 6.4))
plot_ring_frames(ring_balanced_frames.frames, "balanced", axes[0])
plot_ring_frames(ring_collapsed_frames.frames, "large steps", axes[1])
for ax, key, ylabel in ((axes[0, 4], "modes", "modes covered"), (axes[1, 4], "quality", "share within 3 std")):
    ax.plot(ring_balanced["epoch"], ring_balanced[key], "o-", label="balanced")
    ax.plot(ring_collapsed["epoch"], ring_collapsed[key], "o-", label="large steps")
    ax.axvspan(S["toy_epochs"] / 2 + 0.5, S["toy_epochs"], color="gray", alpha=0.1)
    ax.set(xlabel="epoch", ylabel=ylabel, title=f"{key} per epoch (shaded: judged)")
    ax.legend(fontsize=8)
fig.suptitle("grey: real ring, blue: generated (the same noise every epoch)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The top row spreads out and then settles onto the modes. The bottom row reaches the ring sooner, and its
# samples are as sharp (the quality curve), but they sit on two or three modes at a time and hop from one set
# of modes to another: **mode collapse** with "mode hopping", the failure that GAN research since 2016
# (minibatch discrimination, unrolled GANs, Wasserstein GANs, spectral normalisation) keeps attacking. Small,
# balanced steps are the simplest cure here. How fragile the picture is: in our runs with other seeds the
# large-step run also collapsed, but sometimes its samples left the ring between hops, and one of three
# balanced seeds still covered only four to six modes after 16 epochs. GAN training is that sensitive.
#
# ## 6 · Build and train: a DCGAN on MNIST
#
# ### The referee first: a digit classifier trained here
#
# To evaluate a generator of digits we need a judge that knows digits. We train a small CNN on the training
# digits in a few seconds (shifted by up to two pixels for augmentation, with a one-cycle learning-rate
# schedule as in chapter 02). As everywhere in the course, the validation digits watch the training and the
# test digits are scored once, at the end. Its last hidden layer (64 numbers per image) is the
# **feature space (特征空间)** in which we compare real and generated images.

# %%
class DigitClassifier(nn.Module):
    """Two strided 5×5 convolutions (28 → 14 → 7), a 64-unit feature layer, 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def shift_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift a whole batch of images by a random (dy, dx) of at most `max_shift` pixels (augmentation)."""
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


torch.manual_seed(0)
classifier = lib.prepare_model(DigitClassifier(), device)
clf_batches = lib.Batches(split.train_x, split.train_y, batch_size=64, seed=0)
clf_optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
clf_schedule = torch.optim.lr_scheduler.OneCycleLR(clf_optimizer, max_lr=4e-3,
                                                   total_steps=S["classifier_epochs"] * len(clf_batches))
clf_plain_step = lib.supervised_step(classifier, clf_optimizer)
clf_augment = torch.Generator().manual_seed(0)


def classifier_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shift the batch, take the usual supervised step, advance the learning-rate schedule."""
    result = clf_plain_step(shift_batch(x, clf_augment), y)
    clf_schedule.step()
    return result


clf_history = lib.fit(classifier_step, clf_batches, S["classifier_epochs"],
                      evaluate=lambda: {"val_accuracy": lib.accuracy(classifier, split.val_x, split.val_y)},
                      live=False, checkpoint=lib.checkpoint_path("07_gan", "judge", **S),
                      state={"model": classifier, "optimizer": clf_optimizer, "schedule": clf_schedule,
                             "augment": clf_augment})
classifier.eval()
classifier_accuracy = lib.accuracy(classifier, split.test_x, split.test_y)  # the test digits, read once
print(f"digit classifier: validation accuracy {clf_history.last('val_accuracy'):.4f} after the last epoch, "
      f"test accuracy {classifier_accuracy:.4f}")
assert classifier_accuracy >= BAR["classifier_accuracy"]


@torch.no_grad()
def digit_features(images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The classifier's 64-d features for [0, 1] images, in float64 on the CPU for the statistics below."""
    return torch.cat([classifier.features(images[i:i + batch]) for i in range(0, len(images), batch)]).cpu().double()

# %% [markdown]
# ### The Fréchet distance
#
# Fit a Gaussian to the features of real images, $\mathcal N(\mu_r, \Sigma_r)$, and one to the features of
# generated images, $\mathcal N(\mu_g, \Sigma_g)$. The **Fréchet distance (弗雷歇距离)** between them (the squared
# 2-Wasserstein distance between the two Gaussians) is
#
# $$ \mathrm{FD} = \lVert \mu_r - \mu_g \rVert^2 + \operatorname{Tr}\!\Big(\Sigma_r + \Sigma_g
#    - 2\big(\Sigma_r^{1/2}\Sigma_g\Sigma_r^{1/2}\big)^{1/2}\Big). $$
#
# With Inception-v3 features this is the well-known **FID**; here the features come from our own digit
# classifier, so the numbers are on a different scale and only comparable within this chapter. The trace term
# is computed from eigenvalues of a symmetric matrix (stable), and checked against `scipy.linalg.sqrtm` of
# $\Sigma_r\Sigma_g$ (the form usually printed) and against the 1-D closed form
# $(\mu_1-\mu_2)^2 + (\sigma_1-\sigma_2)^2$.

# %%
def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a (n, d) and b (m, d)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


n_fd = S["fd_samples"]
val_features = digit_features(split.val_x[:n_fd])  # the reference while we train and choose settings
shuffle = torch.randperm(len(split.train_x), generator=torch.Generator().manual_seed(0))
train_features = digit_features(split.train_x[shuffle[:n_fd].to(device)])

# ReLU units that never fire give all-zero feature columns and a singular covariance, which the textbook
# sqrtm(Σ_r Σ_g) form handles badly; the eigenvalue form does not care. Compare the two on the live units.
live = (val_features.var(0) > 1e-6) & (train_features.var(0) > 1e-6)
print(f"{int(live.sum())} of 64 feature units are active on real digits")
r_live, t_live = val_features[:, live], train_features[:, live]
cov_r, cov_t = np.cov(r_live.numpy().T), np.cov(t_live.numpy().T)
mean_gap = (r_live.mean(0) - t_live.mean(0)).square().sum().item()
fd_scipy = mean_gap + np.trace(cov_r + cov_t - 2 * scipy.linalg.sqrtm(cov_r @ cov_t).real)
lib.close(frechet_distance(r_live, t_live), fd_scipy, "FD (eigenvalues) vs scipy sqrtm form", rtol=1e-5)
one_d_a, one_d_b = val_features[:, :1], 2.0 * train_features[:, :1] + 0.5
closed_form = (one_d_a.mean() - one_d_b.mean()) ** 2 + (one_d_a.std() - one_d_b.std()) ** 2
lib.close(frechet_distance(one_d_a, one_d_b), closed_form, "FD in 1-D vs (μ1-μ2)² + (σ1-σ2)²", rtol=1e-9)
# FD(a, a) = 0 exactly; in floating point the square roots of near-zero eigenvalues leave an error of order
# sqrt(machine epsilon) × the largest variance, so the tolerance scales with the features' total variance.
self_fd = frechet_distance(val_features, val_features)
assert abs(self_fd) < 1e-5 * torch.cov(val_features.T).trace().item(), f"FD(a, a) = {self_fd:.3g}, not 0"

fd_val_floor = frechet_distance(train_features, val_features)
print(f"real vs real: FD = {fd_val_floor:.2f} between {n_fd} training and {n_fd} validation digits")

# %% [markdown]
# **The real-vs-real floor.** Two disjoint samples of real digits do not score 0: the means and covariances
# estimated from $n$ digits are noisy, and the FD adds up that noise (its expected value falls roughly like
# $1/n$). A generator that drew fresh digits from the true distribution would score about this floor, and
# scoring far below it would mean the "generated" set shares digits with the reference (a leak) or a bug; it is
# also why every FD in this chapter compares two sets of the same size, `fd_samples`. While the GAN trains, and
# whenever a setting is chosen (the number of epochs, the R1 weight below), generated digits are compared with
# the **validation** digits, as above; the test digits are compared once, at the end of §6.

# %% [markdown]
# ### The DCGAN
#
# The generator projects $z$ to 64 feature maps of 7×7, then two **transposed convolutions (转置卷积)** double
# the size twice: 7 → 14 → 28, ending in `tanh` so pixels lie in $[-1, 1]$ (we rescale the real digits to match).
# The discriminator mirrors it with two strided convolutions, 28 → 14 → 7, and a linear layer to **one logit per
# image**. Batch normalisation in both, LeakyReLU in the discriminator, Adam with $\beta_1 = 0.5$, and every
# weight drawn from $\mathcal N(0, 0.02^2)$ (batch-norm scales from $\mathcal N(1, 0.02^2)$, biases 0) instead of
# PyTorch's default, which scales with each layer's fan-in: the DCGAN recipe of Radford et al. (2016). We
# check the initial weights' statistics against the recipe.
#
# Output sizes are where published GAN code goes wrong most often, so we write them down:
#
# $$ H_\text{conv} = \Big\lfloor \frac{H + 2p - k}{s} \Big\rfloor + 1, \qquad
#    H_\text{transposed} = (H - 1)\,s - 2p + k , $$
#
# and assert them against the layers, and against a copy of a buggy generator from a tutorial (a 1×1 input
# through transposed convolutions with $k = 4$ and $(s, p) = (1, 1), (2, 1), (2, 1)$): it ends at 8×8, and a
# discriminator built for 28×28 digits cannot even run on it.

# %%
def conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def conv_transpose_out(h: int, k: int, s: int, p: int) -> int:
    return (h - 1) * s - 2 * p + k


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation: (transposed) convolution and linear weights ~ N(0, 0.02²), batch-norm scales
    ~ N(1, 0.02²), all biases 0. Use it as `model.apply(dcgan_init)`."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (N, z_dim) → images (N, 1, 28, 28) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Sequential(nn.Linear(z_dim, 2 * width * 7 * 7, bias=False),
                                     nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),  # 7 → 14
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),                      # 14 → 28
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).unflatten(1, (2 * self.width, 7, 7)))


class Discriminator(nn.Module):
    """Images (N, 1, 28, 28) in [-1, 1] → one logit per image, shape (N,)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),                    # 28 → 14
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False),                   # 14 → 7
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1),
        )
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


torch.manual_seed(0)
generator = lib.prepare_model(Generator(S["z_dim"], S["width"]), device)
discriminator = lib.prepare_model(Discriminator(S["width"]), device)

assert conv_transpose_out(7, 4, 2, 1) == 14 and conv_transpose_out(14, 4, 2, 1) == 28
assert conv_out(28, 4, 2, 1) == 14 and conv_out(14, 4, 2, 1) == 7
with torch.no_grad():
    fakes = generator(torch.randn(5, S["z_dim"], device=device))
    lib.check.shape(fakes, (5, 1, 28, 28), "generator output")
    lib.check.shape(discriminator(fakes), (5,), "discriminator output: one logit per image")
    lib.check.shape(discriminator(to_gan_range(split.train_x[:5])), (5,), "discriminator on real digits")

buggy = nn.Sequential(nn.ConvTranspose2d(100, 64, 4, 1, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                      nn.ConvTranspose2d(32, 1, 4, 2, 1))
size = 1
for layer in buggy[::2]:
    size = conv_transpose_out(size, layer.kernel_size[0], layer.stride[0], layer.padding[0])
buggy_out = buggy(torch.randn(2, 100, 1, 1))
assert size == 8 and buggy_out.shape == (2, 1, 8, 8), "the formula predicts the buggy generator's 8×8 output"
try:
    discriminator(buggy_out.to(device))
    raise AssertionError("a 28×28 discriminator should reject 8×8 images")
except RuntimeError as error:
    print(f"✓ buggy 8×8 generator output rejected by the 28×28 discriminator: {str(error).splitlines()[0][:80]}")
print(f"generator {sum(p.numel() for p in generator.parameters()):,} parameters, "
      f"discriminator {sum(p.numel() for p in discriminator.parameters()):,}")


def check_dcgan_init(model: nn.Module, name: str) -> None:
    """Assert that each layer's initial weights look like draws from the recipe's normal distribution.

    Mean and standard deviation of n draws of N(c, 0.02²) miss c and 0.02 by about 0.02/√n and 0.02/√(2n);
    we allow five times that, per layer.
    """
    for layer_name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d):
            w, centre = m.weight.detach().flatten().cpu(), 1.0 if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) else 0.0
            n = w.numel()
            assert abs(w.mean().item() - centre) < 5 * 0.02 / n**0.5, f"{name}.{layer_name}: mean {w.mean():.4f}"
            assert abs(w.std().item() - 0.02) < 5 * 0.02 / (2 * n) ** 0.5, f"{name}.{layer_name}: std {w.std():.4f}"
            assert m.bias is None or not m.bias.any(), f"{name}.{layer_name}: biases should start at 0"
    print(f"✓ {name}: every layer's initial weights fit N(0, 0.02²) (batch-norm scales N(1, 0.02²)), biases 0")


check_dcgan_init(generator, "generator")
check_dcgan_init(discriminator, "discriminator")
print(f"(PyTorch's default would start the discriminator's first layer at std "
      f"{nn.Conv2d(1, S['width'], 4).weight.std().item():.3f}, its last at {nn.Linear(2 * S['width'] * 49, 1).weight.std().item():.4f})")

# %% [markdown]
# ### Keeping the discriminator smooth: the R1 penalty
#
# Trained as it stands, this DCGAN learns, and then goes wrong in a telling way. The discriminator sees the same
# 3,500 digits in every epoch and starts to **overfit (过拟合)** them: its judgement, and so the gradient it hands
# the generator, becomes sharp and erratic around the real digits. The generator retreats to shapes where that
# signal is weakest, thick and blobby ones, and under-produces the digits on which its flaws show most, while the
# FD keeps falling and hides it. The baseline run below measures this.
#
# A remedy with a theory behind it is the **R1 gradient penalty (R1 梯度惩罚)** of Mescheder, Geiger and Nowozin
# (2018), used in StyleGAN and its successors: add to the discriminator's loss the squared norm of its gradient
# with respect to its input, on real data,
#
# $$ R_1 = \frac{\gamma}{2}\;\mathbb{E}_{x\sim p_\text{data}}\Big[\big\lVert \nabla_x\, \ell(x) \big\rVert^2\Big], $$
#
# where $\ell$ is the discriminator's logit. It costs the discriminator nothing where it is flat around the real
# data, which is exactly the equilibrium ($p_g = p_\text{data}$, $D = \tfrac12$ everywhere, gradient zero), so it
# does not move the solution of the game; it damps the oscillation around it, and the paper proves (under its
# assumptions) that with it gradient-based GAN training converges locally where plain training may circle forever.
#
# In code, `torch.autograd.grad(..., create_graph=True)` gives $\nabla_x\ell$ as a differentiable tensor, so the
# penalty can itself be back-propagated into the discriminator's weights (a "double backward"). Two checks: for a
# linear discriminator $\ell(x) = w\cdot x + b$ the gradient is $w$ at every $x$, so $R_1 = \tfrac{\gamma}{2}\lVert
# w\rVert^2$ exactly; and for the convolutional discriminator, the gradient's component along a random direction
# $v$ must match the central difference $\big(\ell(x+hv) - \ell(x-hv)\big)/2h$. (The discriminator is checked in
# evaluation mode: in training mode batch normalisation makes each logit depend a little on the rest of the batch,
# so the gradient of the summed logits also carries those small cross-terms; the penalty is used that way in
# training, as the DCGAN recipe keeps batch normalisation.)

# %%
def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 = γ/2 · mean over the batch of ‖∇_x ℓ(x)‖², differentiable (for the discriminator's backward pass).

    `real` must have requires_grad=True when the logits are computed.
    """
    gradient, = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return gamma / 2 * gradient.float().square().flatten(1).sum(1).mean()


linear_d = nn.Sequential(nn.Flatten(), nn.Linear(784, 1), nn.Flatten(0)).to(device)
x_check = to_gan_range(split.train_x[:16]).detach().requires_grad_(True)
lib.close(r1_penalty(linear_d(x_check), x_check, gamma=10.0), 5.0 * linear_d[1].weight.square().sum(),
          "R1 of a linear discriminator vs γ/2·‖w‖²", rtol=1e-5)

x_check = to_gan_range(split.train_x[:4]).cpu().double().requires_grad_(True)  # float64 only on the CPU
d_check = Discriminator(S["width"]).double().eval()
d_check.load_state_dict(discriminator.state_dict())
gradient, = torch.autograd.grad(d_check(x_check).sum(), x_check)
direction, h = torch.randn_like(x_check), 1e-7  # tiny h in float64: a step rarely crosses a LeakyReLU kink
with torch.no_grad():
    central = (d_check(x_check + h * direction) - d_check(x_check - h * direction)) / (2 * h)
lib.close((gradient * direction).flatten(1).sum(1), central, "∇ℓ·v vs central difference", rtol=1e-5, atol=1e-9)
penalty_check = r1_penalty(d_check(x_check), x_check, gamma=2.0)
lib.close(penalty_check, gradient.square().flatten(1).sum(1).mean(), "R1 with γ = 2 vs mean ‖∇ℓ‖²", rtol=1e-9)
penalty_check.backward()
assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d_check.parameters() if p.dim() > 1), \
    "the penalty must reach the discriminator's weights (create_graph=True)"
print(f"R1 of the untrained discriminator on 4 real digits (γ = 2): {penalty_check.item():.4f}")

# %% [markdown]
# ### Training with `lib.fit`, with and without the penalty
#
# The same `make_gan_step` as the toy GAN, run twice from the same initial weights on the same batches: once
# without the R1 penalty (the baseline) and once with it. The only difference is `r1_gamma`. After every epoch,
# `evaluate` does three things with the generator in evaluation mode: it saves the **fixed-noise grid** (the same
# 40 noise vectors every epoch, so the frames are comparable), draws 2,000 samples (`fd_samples` if more) and
# classifies them (the **class coverage** is the smallest share of any digit: 0.1 for a perfectly balanced
# generator, 0 if one digit is missing), and computes the Fréchet distance of `fd_samples` of them to as many
# **validation** digits. These curves are what the settings (epochs, learning rate, $\gamma$) were chosen on.
# Each run's checkpoint holds both networks, both optimisers, the noise generator and the frames; interrupt the
# cell and run it again to resume.
#
# A GAN's "loss" is not a measure of quality: the two losses measure each network against a moving opponent.
# That is why we track the FD and the coverage.

# %%
fixed_noise = torch.randn(40, S["z_dim"], generator=torch.Generator().manual_seed(1)).to(device)
coverage_noise = torch.randn(max(2000, n_fd), S["z_dim"], generator=torch.Generator().manual_seed(2)).to(device)
real_digits = to_gan_range(split.train_x)


@torch.no_grad()
def generate(noise: torch.Tensor, model: nn.Module | None = None, batch: int = 1000) -> torch.Tensor:
    """Samples of `model` (default: the chapter's trained `generator`) as [0, 1] images, in evaluation mode."""
    model = generator if model is None else model
    model.eval()  # batch norm uses its running statistics: a sample does not depend on the rest of the batch
    images = torch.cat([to_pixels(model(noise[i:i + batch])) for i in range(0, len(noise), batch)])
    model.train()
    return images.float()


def class_shares(images: torch.Tensor) -> torch.Tensor:
    """Share of the images that the classifier assigns to each digit."""
    predicted = classifier.head(digit_features(images).float().to(device)).argmax(1)
    return torch.bincount(predicted, minlength=10).float().cpu() / len(images)


def train_dcgan(r1_gamma: float, seed: int = 0) -> tuple[Generator, lib.History, Snapshots]:
    """Train a fresh DCGAN (the profile's settings) with R1 weight `r1_gamma`; return G, history, frames."""
    torch.manual_seed(seed)
    gen = lib.prepare_model(Generator(S["z_dim"], S["width"]), device)
    disc = lib.prepare_model(Discriminator(S["width"]), device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=S["gan_lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=S["gan_lr"], betas=(0.5, 0.999))
    noise = torch.Generator(device=device).manual_seed(seed)
    frames = Snapshots(fixed_noise)

    def evaluate() -> dict[str, float]:
        frames.take(gen)
        samples = generate(coverage_noise, gen)
        return {"val_fd": frechet_distance(digit_features(samples[:n_fd]), val_features),
                "coverage_min": class_shares(samples).min().item()}

    history = lib.fit(
        make_gan_step(gen, disc, opt_g, opt_d, S["z_dim"], noise=noise, r1_gamma=r1_gamma),
        lib.Batches(real_digits, batch_size=S["gan_batch"], seed=seed), S["gan_epochs"],
        evaluate=evaluate,
        live=False,  # the curves live on different scales (FD ~ 100s, D(x) in [0, 1]): section 7 plots them apart
        checkpoint=lib.checkpoint_path("07_gan", f"dcgan-r1-{r1_gamma:g}", seed=seed, **S),
        state={"generator": gen, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d, "noise": noise,
               "frames": frames},
    )
    return gen, history, frames


baseline_generator, baseline_history, _ = train_dcgan(r1_gamma=0.0)
generator, gan_history, grid_frames = train_dcgan(r1_gamma=S["r1_gamma"])

# %% [markdown]
# ### Scoring on the test digits, once
#
# Training is over and nothing will be chosen any more, so now, and only now, the generated digits are compared
# with the test digits: the same `fd_samples` generated digits against as many test digits, and the
# real-vs-real floor at that size between training and test digits. The class coverage needs no real digits:
# it classifies 2,000 samples of the final generator.

# %%
test_features = digit_features(split.test_x[:n_fd])
fd_real_floor = frechet_distance(train_features, test_features)
fd_final = frechet_distance(digit_features(generate(coverage_noise[:n_fd])), test_features)
baseline_fd_final = frechet_distance(digit_features(generate(coverage_noise[:n_fd], baseline_generator)), test_features)
fd_first_epoch = gan_history["val_fd"][0]  # validation: the test digits were not looked at during training
shares = class_shares(generate(coverage_noise))
baseline_shares = class_shares(generate(coverage_noise, baseline_generator))
class_coverage_min, baseline_coverage_min = shares.min().item(), baseline_shares.min().item()
print(f"validation FD with R1 (γ = {S['r1_gamma']}): after epoch 1 {fd_first_epoch:.1f} → last epoch "
      f"{gan_history.last('val_fd'):.1f}; without R1: {baseline_history['val_fd'][0]:.1f} → "
      f"{baseline_history.last('val_fd'):.1f} (floor {fd_val_floor:.1f})")
print(f"test FD: with R1 {fd_final:.1f}, without {baseline_fd_final:.1f} "
      f"(real-vs-real floor, {n_fd} training vs {n_fd} test digits: {fd_real_floor:.1f})")
print("share of each digit, with R1:   ", {d: round(s, 3) for d, s in enumerate(shares.tolist())})
print("share of each digit, without R1:", {d: round(s, 3) for d, s in enumerate(baseline_shares.tolist())})
print(f"class coverage (smallest share; uniform would be 0.100): with R1 {class_coverage_min:.3f}, "
      f"without {baseline_coverage_min:.3f}")
assert gan_history.last("val_fd") < BAR["fd_ratio"] * fd_first_epoch, \
    f"the validation FD should fall below {BAR['fd_ratio']} × its first-epoch value"
assert fd_final > fd_real_floor, ("the test FD is below the real-vs-real floor: for a generator that never saw "
                                  "the test digits and is this far from converged, that points to a bug")
assert class_coverage_min >= BAR["class_coverage_min"], "some digit is (nearly) missing: mode collapse"
if BAR["r1_helps"]:
    assert class_coverage_min > baseline_coverage_min, \
        "the R1 penalty should raise the smallest digit share above the baseline's in this profile"

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
for history, label in ((baseline_history, "without R1"), (gan_history, f"with R1, γ = {S['r1_gamma']}")):
    left.plot(history["epoch"], history["coverage_min"], "o-", label=label)
    right.plot(history["epoch"], history["val_fd"], "o-", label=label)
left.axhline(0.1, color="gray", lw=0.8, label="uniform (0.1)")
left.set(xlabel="epoch", ylabel="smallest share of any digit", title="class coverage (higher is better)")
right.axhline(fd_val_floor, color="gray", ls="--", label="real vs real floor")
right.set(xlabel="epoch", ylabel="Fréchet distance to validation digits", yscale="log",
          title="sample quality (lower is better)")
for ax in (left, right):
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Read the shares, not only the minimum.** A healthy generator gives every digit about 10%. Without the penalty
# the discriminator overfits the 3,500 training digits and the generator makes some digits half as often as
# others. That is **partial mode dropping (部分模式丢失)**: no digit is gone entirely, but the FD's fall alone
# would never have told you. With the R1 penalty the same networks, started from the same weights, spread their
# samples more evenly over the ten digits.
#
# **How sure is that?** One run of a GAN proves little, so we repeated the standard-profile comparison with two
# seeds and with one and two CPU threads (the thread count changes the order of floating-point sums, and a GAN
# amplifies such differences into a different run). In all four runs R1 raised the smallest share, from
# 0.044–0.049 without it to 0.064–0.071 with it; that is what this profile asserts. The test FD moved less
# consistently: with R1 it was 71.6, 57.3, 50.0 and 49.7, without it 69.7, 59.5, 65.3 and 68.4, so R1 was better
# in three runs and slightly worse in one. On this budget R1 reliably buys balance across the digits; that it
# also makes better digits is likely but not proven by four runs, so the chapter does not assert it. Other remedies exist for the same problem (differentiable data augmentation, spectral
# normalisation, more data). The samples are still far from the real-vs-real floor: a few minutes of CPU and
# 3,500 digits make a recognisable, not a perfect, generator.

# %% [markdown]
# ## 7 · Look inside
#
# ### Training dynamics
#
# Left: the two losses. Middle: the discriminator's mean output on real digits, $D(x)$, and on generated ones,
# $D(G(z))$; in a perfectly balanced game both would sit at 0.5, in practice the discriminator stays ahead.
# Right: the Fréchet distance, which is what actually tells you the images improve.

# %%
epochs_axis = gan_history["epoch"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].plot(epochs_axis, gan_history["d_loss"], "o-", label="discriminator loss")
axes[0].plot(epochs_axis, gan_history["g_loss"], "o-", label="generator loss (non-saturating)")
axes[0].set(xlabel="epoch", ylabel="loss", title="losses: a moving target")
axes[1].plot(epochs_axis, gan_history["d_real"], "o-", label="mean D(x), real")
axes[1].plot(epochs_axis, gan_history["d_fake"], "o-", label="mean D(G(z)), generated")
axes[1].axhline(0.5, color="gray", lw=0.8)
axes[1].set(xlabel="epoch", ylabel="discriminator output", ylim=(0, 1), title="what D believes")
axes[2].plot(epochs_axis, gan_history["val_fd"], "o-", color="tab:green", label="generated vs validation digits")
axes[2].axhline(fd_val_floor, color="gray", ls="--", label="real vs real floor")
axes[2].set(xlabel="epoch", ylabel="Fréchet distance", yscale="log", title="sample quality")
for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Widget: scrub through training
#
# Each frame is the generator's output for the same 40 noise vectors at the end of an epoch. Drag the slider to
# watch blobs turn into strokes and strokes into digits; the classifier's guess is shown above each image.

# %%
def draw_epoch(epoch: int) -> plt.Figure:
    frame = to_pixels(grid_frames.frames[epoch - 1])
    guesses = classifier(frame.to(device)).argmax(1).tolist()
    fig = lib.image_grid(frame, [str(g) for g in guesses], columns=10, size=0.9)
    fig.suptitle(f"fixed noise, epoch {epoch} of {len(grid_frames.frames)}: validation FD {gan_history['val_fd'][epoch - 1]:.1f}")
    fig.tight_layout()
    return fig


def make_flipbook() -> lib.widgets.Explorer:
    """An epoch slider over the fixed-noise frames, starting at the last epoch."""
    return lib.widgets.Explorer(draw_epoch, epoch=widgets.IntSlider(
        value=len(grid_frames.frames), min=1, max=len(grid_frames.frames), description="epoch"))


flipbook = make_flipbook()
flipbook

# %%
tested = make_flipbook()  # a fresh copy: the one above may have been moved
tested.controls["epoch"].value = 1
assert tested.values == {"epoch": 1} and "epoch 1 of" in tested.figure.get_suptitle()
shown = torch.as_tensor(np.asarray(tested.figure.axes[0].images[0].get_array()))
lib.close(shown, to_pixels(grid_frames.frames[0][0, 0]), "first image of the epoch-1 frame", quiet=True)
tested.controls["epoch"].value = len(grid_frames.frames)
assert f"epoch {len(grid_frames.frames)} of" in tested.figure.get_suptitle()
assert len(grid_frames.frames) == S["gan_epochs"] and tested.redraws == 3
print("✓ the slider shows the frame of the epoch it is set to")

# %% [markdown]
# ### Latent interpolation
#
# Walk in a straight line between two noise vectors and decode every point. In a generator that has learned a
# smooth map, the images change gradually, and the digit changes identity somewhere in between rather than
# jumping from one memorised image to another.

# %%
z_start, z_end = coverage_noise[0], coverage_noise[1]
ts = torch.linspace(0, 1, 10, device=device)
path = (1 - ts[:, None]) * z_start + ts[:, None] * z_end
lib.close(path[0], z_start, "interpolation starts at z_start", quiet=True)
lib.close(path[-1], z_end, "interpolation ends at z_end", quiet=True)
walk = generate(path)
guesses = classifier(walk).argmax(1).tolist()
lib.image_grid(walk, [f"t={t:.2f}: {g}" for t, g in zip(ts.tolist(), guesses, strict=True)], columns=10, size=1.1)
plt.show()
steps_px = (walk[1:] - walk[:-1]).abs().mean(dim=(1, 2, 3))
print("mean pixel change between neighbours:", [round(s, 3) for s in steps_px.tolist()])

# %% [markdown]
# ### Does it copy its training data?
#
# A generator could score well by memorising. For generated digits and for held-out test digits we find the
# nearest training digit (Euclidean distance in pixel space). If the generator copied, its samples would sit
# much closer to the training set than new real digits do.

# %%
train_flat = split.train_x.flatten(1)
generated_500 = generate(coverage_noise[:500])
generated_near = torch.cdist(generated_500.flatten(1), train_flat).min(dim=1)
test_near = torch.cdist(split.test_x[:500].flatten(1), train_flat).min(dim=1)
print(f"median distance to the nearest training digit: generated {generated_near.values.median():.2f}, "
      f"held-out real {test_near.values.median():.2f}")
assert generated_near.values.median() > 0.8 * test_near.values.median(), "the generator seems to copy training digits"
show = generated_near.values.argsort()[:6]  # the six generated digits closest to a training digit
pairs = torch.cat([generated_500[show], split.train_x[generated_near.indices[show]]])
lib.image_grid(pairs, [f"generated ({d:.1f})" for d in generated_near.values[show].tolist()]
               + ["nearest training"] * 6, columns=6, size=1.3)
plt.show()

# %% [markdown]
# ## 8 · Applications in industry
#
# * **Image synthesis (图像合成).** StyleGAN (NVIDIA) produces photographic faces, cars and rooms at 1024×1024;
#   it is used for product mock-ups, game assets and (with care) synthetic people for advertising.
# * **Super-resolution (超分辨率).** SRGAN and ESRGAN add a GAN loss to upscaling so that textures look sharp
#   instead of blurred; they appear in photo apps, video remastering and satellite imagery.
# * **Data augmentation (数据增强).** Where real data is scarce or private (rare defects in factory inspection,
#   medical scans), generated examples enlarge the training set; they help most when the generator covers all
#   classes, which is what the class-coverage metric checks.
# * **Style and domain transfer (风格迁移).** pix2pix (paired) and CycleGAN (unpaired) translate sketches to
#   photos, day to night, simulation to reality for training robots and self-driving systems.
# * Outside images: audio (HiFi-GAN vocoders in speech synthesis), tabular data synthesis, and the
#   adversarial idea itself in domain adaptation. Today's large image generators are mostly diffusion models,
#   but many still use an adversarial loss in their decoders or for few-step distillation.
#
# **A runnable demonstration: detecting generated digits.** The flip side of synthesis is detection. A
# logistic regression on the classifier's features, scored with 5-fold cross-validation, separates our
# generated digits from real test digits; the ROC AUC says how easily. As a control, the same detector tries to
# separate two sets of real digits (validation vs test), which it should not be able to do: an AUC near 0.5
# there shows that what it finds in the generated digits is theirs, not an artefact of the method.

# %%
def detector_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Cross-validated ROC AUC of a logistic regression that tells two sets of feature vectors apart."""
    x = torch.cat([positive, negative]).numpy()
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    scores = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5, method="predict_proba")[:, 1]
    return roc_auc_score(y, scores)


fake_detector_auc = detector_auc(digit_features(generate(coverage_noise[:n_fd])), test_features)
real_detector_auc = detector_auc(val_features, test_features)
print(f"detector ROC AUC (0.5 = cannot tell them apart): generated vs test digits {fake_detector_auc:.3f}, "
      f"validation vs test digits (control) {real_detector_auc:.3f}")
# With `fd_samples` vectors a side (500 in standard) an AUC has a standard error of 0.02 or less: 0.1 is a clear margin.
assert real_detector_auc < 0.6, "two sets of real digits should look alike to the detector"
assert fake_detector_auc > real_detector_auc + 0.1, "a small generator trained for minutes should be detectable"

# %% [markdown]
# ## 9 · Challenges and limits
#
# * **Instability (训练不稳定).** Two networks optimise different objectives; there is no single loss that goes
#   down. Learning rates, the balance of updates and the architecture all matter, and runs with different
#   seeds can end in very different places. Remedies: the non-saturating loss, Adam with $\beta_1 = 0.5$,
#   spectral normalisation, gradient penalties (WGAN-GP), two time-scale learning rates.
# * **Mode collapse.** Shown in §5: nothing in the generator's loss asks for diversity. Class coverage on
#   generated digits is a cheap alarm for it.
# * **Evaluation (评估).** A GAN has no likelihood to report. FD/FID depends on the feature extractor and on
#   the sample size (two real samples already differ by the floor printed above); it rewards matching feature
#   statistics, not every detail. Precision/recall-style metrics and human studies complement it.
# * **Deepfakes and misuse (深度伪造与滥用).** The same technology forges faces and voices for fraud,
#   harassment and disinformation. Responses: detection (the demo above, which works because generators leave
#   statistical traces, and becomes harder as generators improve), provenance and watermarking standards
#   (C2PA content credentials), platform policies, and laws such as China's 2023 rules on deep synthesis
#   services (深度合成) and the EU AI Act's labelling duties.

# %% [markdown]
# ## 10 · Exercises
#
# **Exercise 1: the discriminator loss from logits.** Write `my_discriminator_loss(real_logits, fake_logits)`
# returning $-\hat V$ (mean over each batch) **without** calling any BCE function, stable for logits of ±200.
# Hint: $-\log\sigma(\ell) = \operatorname{softplus}(-\ell)$.

# %%
def test_discriminator_loss(fn) -> None:
    real = torch.tensor([-200.0, -3.0, 0.0, 4.0, 200.0])
    fake = torch.tensor([200.0, 2.0, 0.0, -5.0, -200.0, 1.0])
    out = fn(real, fake)
    assert torch.isfinite(out), "your loss overflows: use softplus (or logsigmoid), not log(sigmoid(...))"
    lib.close(out, bce(real, 1) + bce(fake, 0), "discriminator loss", rtol=1e-5, quiet=True)


def my_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_discriminator_loss(my_discriminator_loss), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


lib.self_check(lambda: test_discriminator_loss(solution_discriminator_loss), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_discriminator_loss(
    lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean())),
    "log(sigmoid(...)), which overflows at ±200")
lib.check.must_reject(lambda: test_discriminator_loss(lambda r, f: F.softplus(r).mean() + F.softplus(-f).mean()),
                      "a loss with the labels swapped (real → 0, fake → 1)")
lib.check.must_reject(lambda: test_discriminator_loss(lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum()),
                      "sums instead of means")
lib.check.must_reject(lambda: test_discriminator_loss(lambda r, f: torch.cat([F.softplus(-r), F.softplus(f)]).mean()),
                      "one mean over both batches together")

# %% [markdown]
# **Exercise 2: a generator that really ends at 28×28.** A generator starts from $z$ reshaped to
# (N, 100, 1, 1) and uses three `ConvTranspose2d` layers. Return a list of three `(kernel, stride, padding)`
# tuples so that the sizes go 1 → 7 → 14 → 28. Use `conv_transpose_out` to check your arithmetic; the test builds
# the layers and runs them.

# %%
def test_generator_shapes(layers: list[tuple[int, int, int]]) -> None:
    assert len(layers) == 3, "three layers, please"
    channels = [100, 64, 32, 1]
    net = nn.Sequential(*[nn.ConvTranspose2d(channels[i], channels[i + 1], k, s, p)
                          for i, (k, s, p) in enumerate(layers)])
    sizes, x = [], torch.zeros(1, 100, 1, 1)
    for layer in net:
        x = layer(x)
        sizes.append(x.shape[-1])
    assert sizes == [7, 14, 28], f"your layers give sizes {sizes}, expected [7, 14, 28]"


def my_generator_layers() -> list[tuple[int, int, int]]:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_generator_shapes(my_generator_layers()), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_generator_layers() -> list[tuple[int, int, int]]:
    # 1 → 7: (1-1)·1 - 0 + 7 = 7; then the DCGAN doubling block (k=4, s=2, p=1) twice.
    return [(7, 1, 0), (4, 2, 1), (4, 2, 1)]


lib.self_check(lambda: test_generator_shapes(solution_generator_layers()), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_generator_shapes([(4, 1, 1), (4, 2, 1), (4, 2, 1)]),
                      "the tutorial's layers (1 → 2 → 4 → 8)")
lib.check.must_reject(lambda: test_generator_shapes([(7, 1, 0), (4, 2, 1), (3, 2, 1)]),
                      "a last layer that ends at 27")

# %% [markdown]
# **Exercise 3: spherical interpolation.** In high dimensions, standard normal vectors have length close to
# $\sqrt d$, and the straight line between two of them passes through shorter vectors that the generator
# rarely saw during training. **Slerp** walks along the great circle instead:
# $\operatorname{slerp}(z_0, z_1; t) = \frac{\sin((1-t)\Omega)}{\sin\Omega} z_0 + \frac{\sin(t\Omega)}{\sin\Omega} z_1$
# with $\cos\Omega = \frac{z_0\cdot z_1}{\lVert z_0\rVert\,\lVert z_1\rVert}$. Write `my_slerp(z0, z1, t)` for 1-D
# tensors and a float $t$.

# %%
def test_slerp(fn) -> None:
    z0, z1 = coverage_noise[3].cpu().double(), coverage_noise[4].cpu().double()
    lib.close(fn(z0, z1, 0.0), z0, "slerp at t=0", quiet=True)
    lib.close(fn(z0, z1, 1.0), z1, "slerp at t=1", quiet=True)
    e0, e1 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    lib.close(fn(e0, e1, 0.5), torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2), "slerp of two axes",
              quiet=True)
    lib.close(fn(e0, e1, 0.25), torch.tensor([math.cos(math.pi / 8), math.sin(math.pi / 8)], dtype=torch.float64),
              "slerp of two axes at t = 1/4 (a quarter of the 90° angle)", quiet=True)
    middle = fn(z0, z1, 0.5)
    assert middle.norm() > 0.5 * (z0 + z1).norm(), "slerp should keep the length up, unlike the straight line"


def my_slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_slerp(my_slerp), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    omega = torch.arccos((z0 @ z1 / (z0.norm() * z1.norm())).clamp(-1, 1))
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


lib.self_check(lambda: test_slerp(solution_slerp), "Exercise 3 (solution)", strict=True)


def normalised_lerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """A plausible wrong answer: the straight line, rescaled to the average length (right at t = 0, ½, 1)."""
    line = (1 - t) * z0 + t * z1
    return line / line.norm() * ((1 - t) * z0.norm() + t * z1.norm())


lib.check.must_reject(lambda: test_slerp(lambda z0, z1, t: (1 - t) * z0 + t * z1), "the straight line (lerp)")
lib.check.must_reject(lambda: test_slerp(normalised_lerp), "the straight line rescaled to the endpoints' length")
lib.check.must_reject(lambda: test_slerp(lambda z0, z1, t: solution_slerp(z0, z1, 1 - t)),
                      "slerp with the two weights swapped")

# %% [markdown]
# **Exercise 4 (think).** (a) In §3, what happens to $D^*$ and to $V(D^*, G)$ when the two distributions do not
# overlap at all, and why does that make the generator's gradient useless? (This motivated the Wasserstein GAN.)
# (b) In §5's collapsing run, put the generator's learning rate back to 0.002 and keep the discriminator's at 0.02
# (`train_ring_gan(g_lr=2e-3, d_lr=2e-2, epochs=S["toy_epochs"])`). Does it still collapse? What does that say?
# (c) Why is the FD between two *real* samples not zero, and how would it change with 4× more samples?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
far_grid = torch.linspace(-10, 50, 600_001, dtype=torch.float64)
jsd_far = [scipy.spatial.distance.jensenshannon(normal_pdf(far_grid, 0.0, 0.5).numpy(),
                                                normal_pdf(far_grid, shift, 0.5).numpy()) ** 2 for shift in (10.0, 40.0)]
slow_g, _ = train_ring_gan(g_lr=2e-3, d_lr=2e-2, epochs=S["toy_epochs"])
slow_g_modes, slow_g_quality = late_median(slow_g, "modes"), late_median(slow_g, "quality")
floor_small = frechet_distance(train_features[: n_fd // 4], val_features[: n_fd // 4])
lib.model_answer(f"""
**(a)** Where only $p_\\text{{data}}$ has mass, $D^* = 1$; where only $p_g$ has mass, $D^* = 0$. Both log terms
are then $\\log 1 = 0$, so $V(D^*, G) = 0$ and $\\mathrm{{JSD}} = \\log 2$, the maximum, **whatever the distance**
between the two supports: for two narrow Gaussians 10 and 40 apart it is {jsd_far[0]:.4f} and {jsd_far[1]:.4f} nats
(log 2 = {math.log(2):.4f}). A divergence that is the same constant for every non-overlapping $p_g$ has zero gradient
with respect to the generator: it does not say "move closer". In a network this shows up as a discriminator that
is (nearly) perfect, $D(G(z)) \\approx 0$, where the saturating loss's gradient $-D$ vanishes (§4). Real images
lie near thin low-dimensional sets that rarely overlap early in training, so this is the normal case. The
Wasserstein distance grows with how far the mass must move, so it keeps a useful gradient; that is the WGAN's idea.

**(b)** With small generator steps and the same fast discriminator, this run covers a median of
{slow_g_modes:.1f} of 8 modes in the second half of training, at quality {slow_g_quality:.2f} (the collapsing run:
{toy_modes_collapsed:.1f} modes). Collapse here comes from the *generator's* step size: a generator that can move all
its samples in one large step jumps to whatever the discriminator currently prefers. Keep the generator's steps
small relative to how fast the discriminator can react (equal small learning rates, or a two time-scale rule with
the discriminator faster).

**(c)** The FD compares means and covariances **estimated** from $n$ digits. Each estimate has sampling noise, and
the FD adds up that noise as squared differences, which are positive: $\\mathbb E\\lVert\\hat\\mu_a - \\hat\\mu_b\\rVert^2
= 2\\operatorname{{Tr}}\\Sigma / n$ for the mean term alone, and the covariance term behaves alike. So the floor is
a bias of order $1/n$: with 4× more samples it drops to roughly a quarter. Measured here: {n_fd // 4} vs {n_fd // 4}
real digits give FD {floor_small:.1f}, {n_fd} vs {n_fd} give {fd_val_floor:.1f} (ratio {floor_small / fd_val_floor:.1f}).
This is also why generated and real sets must have the same size when FDs are compared.
""")

# %% [markdown]
# ## 11 · Summary and FAQ
#
# * A GAN is a two-player game: $D$ maximises $V(D,G)$, $G$ minimises it. For a fixed $G$ the best discriminator
#   is $p_\text{data}/(p_\text{data}+p_g)$, and against it the generator minimises a Jensen–Shannon divergence.
# * Use the non-saturating generator loss, written as `BCEWithLogits(fake_logits, 1)`; never `sigmoid` + `BCELoss`.
# * Write down the output size of every layer: the generator must produce exactly what the discriminator reads,
#   and the discriminator must return one logit per image.
# * Mode collapse is real and easy to provoke (generator steps that are too large). Few modes *and* good samples
#   is collapse; few modes and bad samples is just an unfinished run. Measure coverage, not just looks.
# * On little data the discriminator overfits and the generator drops the digits where its flaws show most; the
#   R1 penalty $\tfrac{\gamma}{2}\lVert\nabla_x \ell(x)\rVert^2$ on real data keeps the game stable and the digits covered.
# * Evaluate with a classifier you trust: class coverage and the Fréchet distance in its feature space,
#   compared with the real-vs-real floor.
#
# **FAQ.** *Why do the losses not go down?* Each is measured against an opponent that improves too; use FD or
# samples to judge progress. *Why `tanh` and $[-1, 1]$?* A symmetric range suits the generator's last layer and
# batch normalisation; the real images must be scaled the same way, or $D$ wins by looking at the pixel range.
# *Why `generator.eval()` for sampling?* Batch normalisation then uses its running statistics, so a sample does
# not depend on what else is in the batch. *Why are my samples different from a classmate's?* GAN training is
# chaotic: thread counts and hardware change the floating-point order and with it the whole trajectory. *GAN or
# diffusion?* Diffusion models are easier to train and cover modes better; GANs sample in one forward pass,
# which is why adversarial losses survive inside fast generators.

# %%
lib.save_results("07_gan", {
    "class_coverage_min": class_coverage_min,
    "fd_first_epoch": fd_first_epoch,
    "fd_final": fd_final,
    "fd_real_floor": fd_real_floor,
    "fd_final_without_r1": baseline_fd_final,
    "class_coverage_min_without_r1": baseline_coverage_min,
    "classifier_test_accuracy": classifier_accuracy,
    "toy_modes_balanced": toy_modes_balanced,
    "toy_modes_collapsed": toy_modes_collapsed,
    "toy_quality_collapsed": toy_quality_collapsed,
    "fake_detector_auc": fake_detector_auc,
    "real_detector_auc": real_detector_auc,
})
