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
# # 06 · Variational autoencoders: a generative model you can sample from
#
# Chapter 05 ended with a problem: an autoencoder compresses digits well, but its code space has holes, so a random
# code decodes to garbage and there is no way to *generate*. The **variational autoencoder (变分自编码器, VAE)**
# fixes this with one idea: treat the code as a random variable with a simple **prior (先验)**, train the decoder as
# a probability model of images given codes, and train the encoder to approximate the posterior. The objective that
# falls out, the **evidence lower bound (证据下界, ELBO)**, is a reconstruction term plus a KL penalty, and it is a
# real lower bound on the log-likelihood of the data, which we will measure in nats.
#
# **A common pitfall.** A network that maps an image to a `tanh` bottleneck and back, trained with binary
# cross-entropy, is *not* a VAE, whatever it is called: it has no sampling step, no KL term and no prior, so it cannot
# generate and its loss is not a likelihood. Every piece that makes a VAE a VAE is built and checked below.
#
# **Goals**
# 1. Derive the ELBO step by step and check every step numerically on a model where $\log p(x)$ is known exactly.
# 2. Understand why sampling blocks gradients and how the **reparameterisation trick (重参数化技巧)** fixes it.
# 3. Compute the Gaussian KL in closed form and check it against Monte Carlo and `torch.distributions`.
# 4. Train a convolutional VAE on MNIST with its training length checked on validation digits, then report the
#    test negative ELBO in nats per image, and a tighter importance-weighted estimate of the negative log-likelihood.
# 5. Sample, reconstruct, interpolate, and steer a 2-D latent space with sliders.
# 6. Trade rate against distortion with β-VAE and watch posterior collapse happen.
#
# **Time:** quick ≈ 35 s · standard ≈ 1 min on an idle 2-core laptop · full (GPU, full MNIST) a few minutes.

# %%
import math
import zlib

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import lib

device = lib.setup(seed=0)

# %% [markdown]
# Everything that changes with the profile (`COURSE_PROFILE`) is in the next cell. `epochs` trains the main VAE,
# `beta_epochs` each model of the β sweep, `map_epochs` the 2-D model behind the slider widget; `iw_samples` is the
# number $k$ of importance samples per test image and `iw_images` how many test images get them. `channels` and
# `hidden` size the network. The standard profile uses a slim one (8 and 16 convolution channels, 128 hidden units)
# with a larger learning rate: on a laptop CPU it reaches a given −ELBO in well under half the time of the 32-channel,
# 256-unit network, and ends about 3 nats behind it (measured in `benchmarks/time_to_quality.py`).

# %%
SETTINGS = {
    "quick": dict(epochs=3, batch_size=32, lr=2e-3, latent=16, channels=32, hidden=256, beta_epochs=2, map_epochs=3,
                  iw_samples=100, iw_images=150),
    "standard": dict(epochs=10, batch_size=32, lr=4e-3, latent=16, channels=8, hidden=128, beta_epochs=3, map_epochs=5,
                     iw_samples=100, iw_images=1000),
    "full": dict(epochs=30, batch_size=128, lr=2e-3, latent=32, channels=32, hidden=256, beta_epochs=5, map_epochs=10,
                 iw_samples=200, iw_images=10000),
}
BARS = {"quick": 180.0, "standard": 115.0, "full": 100.0}  # highest acceptable test -ELBO, nats per image
S = lib.pick(SETTINGS)
print(lib.get_profile(), S, "bar: test -ELBO <=", lib.pick(BARS))

# %% [markdown]
# ## 1 · Concepts
#
# * A **latent variable model (潜变量模型)** explains each image $x$ by an unobserved code $z$: first draw
#   $z \sim p(z)$ from the prior, then draw the image from the **likelihood (似然)** $p_\theta(x\mid z)$, a neural
#   network called the **decoder (解码器)**. The model's probability of an image, the **marginal likelihood** or
#   **evidence (证据)**, is $p_\theta(x) = \int p_\theta(x\mid z)\,p(z)\,dz$. It is a **generative model (生成模型)**:
#   sampling $z$ and decoding it *makes new data*.
#   (The formula $p(x) = \prod_i p(x_i\mid x_{<i})$ that is sometimes quoted for VAEs describes a different family,
#   autoregressive models; a VAE's pixels are independent *given* $z$, and dependent through it.)
# * The **posterior (后验)** $p_\theta(z\mid x)$, "which codes explain this image", is intractable because the
#   integral is. **Variational inference (变分推断)** replaces it with a simple distribution
#   $q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))$ whose mean and variance come from
#   a second network, the **encoder (编码器)** or inference network. One network for all images is called
#   *amortised* inference.
# * The **KL divergence (KL散度)** $\mathrm{KL}(q\,\|\,p) = \mathbb E_q[\log q - \log p] \ge 0$ measures how far $q$ is
#   from $p$; it is zero only when they are equal.
# * Training maximises the **ELBO**, a lower bound on $\log p_\theta(x)$, over both networks at once.
#
# **The data.** A Bernoulli likelihood is a probability distribution over *binary* images, so we binarise: each
# pixel becomes 1 with probability equal to its grey level. Training images are re-binarised in every mini-batch
# (**dynamic binarisation**, a free form of data augmentation); the validation and test images are binarised once
# with fixed seeds, so every evaluation sees the same images. This is the standard protocol behind the "nats per
# image" numbers in the literature. (Binary cross-entropy against grey targets also trains, but it is not the
# log-probability of anything, so the numbers it reports are not log-likelihoods.)
#
# As in every chapter since 02: the model learns from `train`; whatever we decide by looking at results (how many
# epochs, which β) is decided on `val`; `test` is read at the end, for the numbers we report.

# %%
split = lib.load_digits().to(device)
print(split)
val_x = torch.bernoulli(split.val_x.cpu(), generator=torch.Generator().manual_seed(1)).to(device)
val_y = split.val_y
test_x = torch.bernoulli(split.test_x.cpu(), generator=torch.Generator().manual_seed(0)).to(device)
test_y = split.test_y


def binarise(x: torch.Tensor) -> torch.Tensor:
    """Dynamic binarisation: each pixel is 1 with probability equal to its grey level."""
    return torch.bernoulli(x)


assert set(test_x.unique().tolist()) == {0.0, 1.0}
lib.close(test_x.mean(), split.test_x.mean(), "share of 'on' pixels vs mean grey level", atol=0.003)
fig = lib.image_grid(torch.cat([split.test_x[:10], test_x[:10]]), ["grey"] * 10 + ["binary"] * 10, columns=10)
fig.suptitle("test digits: grey levels (top) and the fixed binarised test set (bottom)", y=1.02)
plt.show()

# %% [markdown]
# ## 2 · Equations
#
# ### 2.1 The Bernoulli likelihood
#
# The decoder outputs one logit $\ell_i$ per pixel; pixel $i$ is on with probability $\pi_i = \sigma(\ell_i)$ and the
# pixels are independent given $z$:
#
# $$ \log p_\theta(x\mid z) = \sum_{i=1}^{784} \big[x_i \log \sigma(\ell_i) + (1-x_i)\log(1-\sigma(\ell_i))\big]
#    = \sum_i \big[x_i \log\sigma(\ell_i) + (1-x_i)\log\sigma(-\ell_i)\big]. $$
#
# The right-hand form (with `logsigmoid`) never takes the log of 0. It is minus the binary cross-entropy **summed**
# over pixels. **A common pitfall:** Keras' `binary_crossentropy` and PyTorch's default `reduction="mean"` *average*
# over pixels, which shrinks the reconstruction term 784-fold next to the KL term: a VAE trained that way is a β-VAE
# with β = 784 and collapses (section 6 shows what that looks like).

# %%
def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per image for independent Bernoulli pixels with the given logits; shape (N,)."""
    return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).flatten(1).sum(1)


example_logits = torch.linspace(-8, 8, 784).reshape(1, 1, 28, 28).repeat(4, 1, 1, 1).to(device)
example_x = val_x[:4]
by_hand = bernoulli_log_likelihood(example_logits, example_x)
lib.close(by_hand, Bernoulli(logits=example_logits).log_prob(example_x).flatten(1).sum(1),
          "Bernoulli log-likelihood vs torch.distributions.Bernoulli", rtol=1e-5, atol=1e-3)
lib.close(-by_hand.sum(), F.binary_cross_entropy_with_logits(example_logits, example_x, reduction="sum"),
          "minus log-likelihood vs summed BCE-with-logits", rtol=1e-5)
mean_bce = F.binary_cross_entropy_with_logits(example_logits, example_x)  # the default: reduction="mean"
lib.close(-by_hand.mean() / mean_bce, 784.0, "the 'mean' reduction divides by the pixel count", rtol=1e-4)

# %% [markdown]
# ### 2.2 The ELBO, step by step
#
# Start from the log-evidence and multiply and divide by $q(z\mid x)$ inside the integral:
#
# $$ \log p(x) = \log \int p(x\mid z)\,p(z)\,dz = \log \int q(z\mid x)\,\frac{p(x\mid z)\,p(z)}{q(z\mid x)}\,dz
#    = \log \mathbb E_{q(z\mid x)}\!\left[w(z)\right], \qquad w(z) = \frac{p(x, z)}{q(z\mid x)} . $$
#
# The log is concave, so **Jensen's inequality** moves it inside the expectation and gives a lower bound:
#
# $$ \log p(x) \;\ge\; \mathbb E_{q}\!\left[\log p(x\mid z) + \log p(z) - \log q(z\mid x)\right]
#    = \underbrace{\mathbb E_{q}\!\left[\log p(x\mid z)\right]}_{\text{reconstruction}}
#    - \underbrace{\mathrm{KL}\!\left(q(z\mid x)\,\|\,p(z)\right)}_{\text{rate}} \;=\; \mathrm{ELBO}(x). $$
#
# How loose is it? Write $p(x, z) = p(z\mid x)\,p(x)$ inside the expectation and the gap is exactly a KL:
#
# $$ \log p(x) - \mathrm{ELBO}(x) = \mathrm{KL}\!\left(q(z\mid x)\,\|\,p(z\mid x)\right) \ge 0 . $$
#
# So maximising the ELBO over the encoder pulls $q$ towards the true posterior, and over the decoder raises the
# likelihood. When $q$ *is* the posterior, $w(z) = p(x)$ for every $z$ and the bound is tight.
#
# We check all of this on a model small enough to solve exactly: $z \sim \mathcal N(0, 1)$,
# $x\mid z \sim \mathcal N(a z, s^2)$. Then $p(x) = \mathcal N(x; 0, a^2 + s^2)$ and the posterior is
# $\mathcal N\!\big(\tfrac{a x}{a^2+s^2}, \tfrac{s^2}{a^2+s^2}\big)$.

# %%
a, s, x0 = 2.0, 0.5, torch.tensor(1.5, dtype=torch.float64)
zero = torch.tensor(0.0, dtype=torch.float64)  # float64 parameters: Normal(0.0, ...) would round them to float32
prior = Normal(zero, 1.0)
log_evidence = Normal(zero, math.sqrt(a**2 + s**2)).log_prob(x0)
posterior = Normal(a * x0 / (a**2 + s**2), math.sqrt(s**2 / (a**2 + s**2)))

# 1. the evidence by brute-force integration over a fine grid of z. For a smooth integrand that vanishes at the ends
# of the grid this sum converges faster than any power of the step, so what is left is float64 rounding over
# 200,001 terms (about 1e-12); parameters rounded to float32 would already be 1e-8 off.
grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
joint_on_grid = Normal(a * grid, s).log_prob(x0) + prior.log_prob(grid)
lib.close(torch.logsumexp(joint_on_grid, 0) + math.log(grid[1] - grid[0]), log_evidence,
          "log p(x) by numerical integration vs closed form", rtol=0, atol=1e-10)


def log_weights(q: Normal, n: int, generator: torch.Generator) -> torch.Tensor:
    """log w(z) = log p(x, z) - log q(z) for n samples z ~ q (reparameterised)."""
    z = q.loc + q.scale * torch.randn(n, dtype=torch.float64, generator=generator)
    return Normal(a * z, s).log_prob(x0) + prior.log_prob(z) - q.log_prob(z)


generator = torch.Generator().manual_seed(0)
q_wrong = Normal(torch.tensor(0.2, dtype=torch.float64), 0.6)  # some other Gaussian
w_wrong = log_weights(q_wrong, 400_000, generator)
elbo_wrong, standard_error = w_wrong.mean(), w_wrong.std() / math.sqrt(len(w_wrong))
print(f"log p(x) = {log_evidence:.4f}, ELBO with a poor q = {elbo_wrong:.4f} ± {standard_error:.4f}")
# 2. Jensen: the ELBO is below log p(x); 3. the gap is exactly KL(q || posterior)
assert elbo_wrong < log_evidence
lib.close(log_evidence - elbo_wrong, kl_divergence(q_wrong, posterior), "log p(x) - ELBO vs KL(q || posterior)",
          atol=4 * standard_error.item())
# 4. with q equal to the posterior every single sample's weight is p(x): the bound is tight, with zero variance.
# Three log-densities of size < 30 cancel in float64 (about 1e-15 each); a posterior off by 1e-4 in its mean or
# its scale moves log w by about 1e-3.
w_exact = log_weights(posterior, 1000, generator)
lib.close(w_exact, log_evidence.expand(1000), "log w(z) for q = posterior (every sample)", rtol=0, atol=1e-12)

# %% [markdown]
# ### 2.3 The KL term in closed form
#
# With $q = \mathcal N(\mu, \operatorname{diag}\sigma^2)$ and $p(z) = \mathcal N(0, I)$ the KL has a closed form.
# For one dimension, $\log q(z) - \log p(z) = -\log\sigma - \frac{(z-\mu)^2}{2\sigma^2} + \frac{z^2}{2}$; take the
# expectation under $q$ ($\mathbb E[(z-\mu)^2] = \sigma^2$, $\mathbb E[z^2] = \mu^2 + \sigma^2$) and sum over the
# $d$ independent dimensions:
#
# $$ \mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, I)\big)
#    = \tfrac12 \sum_{j=1}^{d} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big) . $$
#
# The encoder outputs $\log\sigma^2$ (any real number) rather than $\sigma$ (which must stay positive). We check the
# formula against a Monte Carlo average of $\log q - \log p$ and against `torch.distributions.kl_divergence`.

# %%
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over the latent dimensions; shape (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


mu_example = torch.tensor([[0.0, 1.0, -2.0, 0.5], [0.3, 0.0, 0.0, -1.0]], dtype=torch.float64)
logvar_example = torch.tensor([[0.0, -1.0, 1.0, -3.0], [0.5, 0.0, -0.2, 0.0]], dtype=torch.float64)
closed_form = gaussian_kl(mu_example, logvar_example)
q_example = Normal(mu_example, (0.5 * logvar_example).exp())
p_standard = Normal(torch.zeros_like(mu_example), torch.ones_like(mu_example))
lib.close(closed_form, kl_divergence(q_example, p_standard).sum(1), "closed-form KL vs torch.distributions")
z_samples = q_example.sample((200_000,))
per_sample = (q_example.log_prob(z_samples) - p_standard.log_prob(z_samples)).sum(-1)
monte_carlo, mc_error = per_sample.mean(0), per_sample.std(0) / math.sqrt(len(per_sample))
print("Monte Carlo:", monte_carlo.numpy().round(4), "±", mc_error.numpy().round(4), " closed form:",
      closed_form.numpy().round(4))
lib.close(monte_carlo, closed_form, "closed-form KL vs Monte Carlo (4 standard errors)", atol=4 * mc_error.max().item())
lib.close(gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)), torch.zeros(1), "KL(q || p) = 0 when q = p")

# %% [markdown]
# ### 2.4 The reparameterisation trick
#
# The reconstruction term $\mathbb E_{q_\phi(z\mid x)}[\log p_\theta(x\mid z)]$ is estimated by sampling $z$. But a
# sample drawn by a random-number generator is just a number: autograd cannot tell how it would move if $\mu$ or
# $\sigma$ moved, so the encoder would get no gradient from the reconstruction. The trick moves the randomness
# into an input that does not depend on the parameters:
#
# $$ z = \mu + \sigma \odot \varepsilon, \qquad \varepsilon \sim \mathcal N(0, I)
#    \quad\Longrightarrow\quad
#    \nabla_{\mu,\sigma}\, \mathbb E_{q}[f(z)] = \mathbb E_{\varepsilon}\big[\nabla_{\mu,\sigma} f(\mu + \sigma\varepsilon)\big]. $$
#
# For $f(z) = z^2$ we know $\mathbb E[f] = \mu^2 + \sigma^2$, so the exact gradients are $2\mu$ and $2\sigma$. The
# alternative without the trick, the *score-function* (REINFORCE) estimator
# $\mathbb E_q\!\big[f(z)\,\nabla_\mu \log q(z)\big] = \mathbb E_q\!\big[f(z)\,(z-\mu)/\sigma^2\big]$, is also unbiased
# but far noisier; that noise is why VAEs train well and why discrete latents (no trick) are harder.

# %%
mu = torch.tensor(1.0, requires_grad=True)
sigma = torch.tensor(0.5, requires_grad=True)
assert not Normal(mu, sigma).sample().requires_grad, "a plain sample carries no gradient"
assert Normal(mu, sigma).rsample().requires_grad, "rsample is the reparameterised sample"
torch.manual_seed(2)
reparameterised = Normal(mu, sigma).rsample((5,))
torch.manual_seed(2)
lib.close(reparameterised, mu + sigma * torch.randn(5), "rsample = mu + sigma * eps with the same eps")
torch.manual_seed(1)
eps = torch.randn(200_000)

z = mu + sigma * eps  # reparameterised samples
z.pow(2).mean().backward()
lib.close(mu.grad, 2 * mu.detach(), "reparameterised gradient wrt mu vs 2 mu", atol=0.01)
lib.close(sigma.grad, 2 * sigma.detach(), "reparameterised gradient wrt sigma vs 2 sigma", atol=0.01)

per_sample_reparam = 2 * z.detach()  # d f / d mu for each sample
z_plain = z.detach()
per_sample_score = z_plain.pow(2) * (z_plain - mu.item()) / sigma.item() ** 2  # f(z) * d log q / d mu
print(f"gradient wrt mu, exact 2.0 | reparameterised {per_sample_reparam.mean():.3f} "
      f"(variance {per_sample_reparam.var():.2f}) | score function {per_sample_score.mean():.3f} "
      f"(variance {per_sample_score.var():.2f})")
lib.close(per_sample_score.mean(), 2.0, "score-function estimate is unbiased too", atol=0.05)
assert per_sample_score.var() > 10 * per_sample_reparam.var(), "the reparameterised estimator should be much less noisy"

# %% [markdown]
# ### 2.5 A tighter bound: importance weighting
#
# Jensen's gap shrinks if we average several weights *inside* the log (Burda et al., 2016):
#
# $$ \mathcal L_k(x) = \mathbb E_{z_1..z_k \sim q}\Big[\log \frac1k \sum_{j=1}^k w(z_j)\Big], \qquad
#    \mathrm{ELBO} = \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x), \qquad
#    \mathcal L_k \to \log p(x) \text{ as } k\to\infty . $$
#
# Weights underflow in float32, so the average is computed in log space with the log-sum-exp trick:
# $\log \frac1k\sum_j e^{\ell_j} = m + \log \sum_j e^{\ell_j - m} - \log k$ with $m = \max_j \ell_j$. On the exact
# model above we can watch $\mathcal L_k$ climb towards $\log p(x)$.

# %%
def iw_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_j exp(log_w[..., j]) over the last dimension, computed stably."""
    m = log_w.max(-1, keepdim=True).values
    return m.squeeze(-1) + (log_w - m).exp().sum(-1).log() - math.log(log_w.shape[-1])


lib.close(iw_bound(w_wrong.reshape(100, -1)), torch.logsumexp(w_wrong.reshape(100, -1), -1) - math.log(4000),
          "hand log-mean-exp vs torch.logsumexp", rtol=0, atol=1e-12)  # float64; a missing log k is 8.3 off
bounds = {k: iw_bound(log_weights(q_wrong, 2000 * k, generator).reshape(2000, k)).mean().item()
          for k in (1, 10, 100, 1000)}
print({k: round(v, 4) for k, v in bounds.items()}, "log p(x) =", round(log_evidence.item(), 4))
assert bounds[1] < bounds[10] < bounds[100] < bounds[1000] <= log_evidence.item() + 1e-3
lib.close(bounds[1000], log_evidence, "L_1000 close to log p(x)", atol=0.01)

# %% [markdown]
# ## 3 · Build and train a VAE on MNIST
#
# The model is a short `nn.Module`. The encoder is two stride-2 convolutions (28 → 14 → 7) and a linear layer that
# outputs $2d$ numbers: $\mu$ and $\log\sigma^2$. The decoder mirrors it with transposed convolutions and outputs
# one **logit** per pixel (no sigmoid: the loss works on logits, for stability). Two small details that matter on
# 3,500 training images: ELU activations (smoother than ReLU, they train faster here), and the decoder's output bias
# starts at the logit of the average pixel brightness, so the untrained model starts from faint ink everywhere
# instead of a coin flip per pixel.
#
# The loss per image is the negative ELBO, **distortion + rate**: $-\log p(x\mid z)$ for one reparameterised $z$,
# plus the closed-form KL. The step function does the forward pass, the backward pass and the update; `lib.fit`
# supplies the loop, progress bar, live curves, NaN guard and checkpoints, exactly as for the classifiers of
# chapters 02–04 and the GAN of chapter 07. The `beta` argument is 1 for a VAE; section 6 varies it.

# %%
class VAE(nn.Module):
    """q(z|x) = N(mu(x), diag exp(logvar(x))), p(z) = N(0, I), p(x|z) = Bernoulli(sigmoid(decoder(z)))."""

    def __init__(self, latent: int = 16, channels: int = 32, hidden: int = 256) -> None:
        super().__init__()
        c = channels
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.ELU(),  # 28 -> 14
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ELU(),  # 14 -> 7
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, hidden), nn.ELU(),
            nn.Linear(hidden, 2 * latent),  # mu and logvar
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, 2 * c * 7 * 7), nn.ELU(),
            nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ELU(),  # 7 -> 14
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1),  # 14 -> 28, logits
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # reparameterisation
        return self.decode(z), mu, logvar


def new_vae(latent: int, channels: int = S["channels"], seed: int = 0) -> VAE:
    """A VAE whose output bias starts at the logit of the mean pixel brightness of the training set."""
    torch.manual_seed(seed)
    model = VAE(latent, channels, S["hidden"])
    with torch.no_grad():
        model.decoder[-1].bias.fill_(torch.logit(split.train_x.mean()).item())
    return lib.prepare_model(model, device)


def distortion_and_rate(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: -log p(x|z) for one reparameterised z (distortion) and KL(q(z|x) || p(z)) (rate), in nats."""
    logits, mu, logvar = model(x)
    return -bernoulli_log_likelihood(logits, x), gaussian_kl(mu, logvar)


def vae_step(model: VAE, optimizer: torch.optim.Optimizer, schedule=None, beta: float = 1.0):
    """A `lib.fit` step: binarise the batch, loss = distortion + beta * rate, backward, update."""

    def step(x: torch.Tensor, _labels: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        distortion, rate = distortion_and_rate(model, binarise(x))
        loss = (distortion + beta * rate).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        return {"loss": loss.detach(), "distortion": distortion.mean().detach(), "rate": rate.mean().detach()}

    return step


@torch.no_grad()
def evaluate_vae(model: VAE, x: torch.Tensor, split_name: str = "val", batch_size: int = 1000) -> dict[str, float]:
    """Mean distortion, rate and negative ELBO (one z sample per image) on binary images `x`, named after the split."""
    model.eval()
    parts = [distortion_and_rate(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    distortion = torch.cat([p[0] for p in parts]).mean().item()
    rate = torch.cat([p[1] for p in parts]).mean().item()
    return {f"{split_name}_loss": distortion + rate, f"{split_name}_distortion": distortion, f"{split_name}_rate": rate}


@torch.no_grad()
def encode_means(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Posterior means mu(x) of images `x`, encoded in batches (a whole training set at once could fill a GPU)."""
    return lib.predict(model.encoder, x)[:, : model.latent]


vae = new_vae(S["latent"])
lib.check.shape(vae.decode(torch.zeros(2, S["latent"], device=device)), (2, 1, 28, 28), "decoder output")
lib.check.shape(vae.encode(val_x[:2])[0], (2, S["latent"]), "encoder mean")
lib.close(encode_means(vae, val_x[:3]), vae.eval().encode(val_x[:3])[0], "batched posterior means", quiet=True)
print(f"VAE parameters: {sum(p.numel() for p in vae.parameters()):,}")
before = evaluate_vae(vae, val_x)
print(f"untrained model: validation -ELBO {before['val_loss']:.1f} nats per image")

# %% [markdown]
# A baseline to beat: the best model that ignores $z$ entirely gives each pixel its own on-probability (its
# training-set frequency) and pays $-\sum_i [x_i\log\pi_i + (1-x_i)\log(1-\pi_i)]$ nats per image.

# %%
pixel_frequency = split.train_x.mean(0, keepdim=True).clamp(1e-3, 1 - 1e-3)
independent_pixels_nll = -bernoulli_log_likelihood(torch.logit(pixel_frequency).expand_as(val_x), val_x).mean().item()
print(f"independent-pixel baseline: {independent_pixels_nll:.1f} nats per validation image")

# %%
batches = lib.Batches(split.train_x, split.train_y, batch_size=S["batch_size"], seed=0)
optimizer = torch.optim.Adam(vae.parameters(), lr=S["lr"])
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=S["epochs"] * len(batches))
history = lib.fit(
    vae_step(vae, optimizer, schedule), batches, S["epochs"],
    evaluate=lambda: evaluate_vae(vae, val_x),
    checkpoint=lib.checkpoint_path("06_vae", "vae", **S),
    state={"model": vae, "optimizer": optimizer, "schedule": schedule},
)
print(history)

# %% [markdown]
# The curves are on the validation digits, and they are what `epochs` was chosen from: with the cosine schedule the
# validation −ELBO should still be at its lowest at the last epoch. (A one-sample −ELBO on 500 images moves by a few
# tenths of a nat from one evaluation to the next, so "lowest" allows 1%.)

# %%
best_val = min(history["val_loss"])
print(f"validation -ELBO: last epoch {history.last('val_loss'):.2f}, best {best_val:.2f} "
      f"(epoch {int(np.argmin(history['val_loss'])) + 1} of {S['epochs']})")
assert history.last("val_loss") <= 1.01 * best_val, "the validation -ELBO rose at the end: train fewer epochs"

# %% [markdown]
# ### Measuring the model: negative ELBO and importance-weighted NLL
#
# For each test image we draw $k$ samples $z_j \sim q(z\mid x)$ and compute the log-weights
# $\log w_j = \log p(x\mid z_j) + \log p(z_j) - \log q(z_j\mid x)$. Their mean estimates the ELBO, and their
# log-mean-exp the importance-weighted bound $\mathcal L_k$. The fast version below decodes all $k$ samples of a
# chunk of images in one batch, which takes some reshaping; before trusting it we recompute the weights of a few
# images one sample at a time with `torch.distributions`, from the same random draws.

# %%
@torch.no_grad()
def test_log_weights(model: VAE, x: torch.Tensor, k: int, chunk: int = 100) -> torch.Tensor:
    """(N, k) log-weights log p(x, z_j) - log q(z_j | x) for z_j ~ q(z | x)."""
    model.eval()
    out = []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        mu, logvar = model.encode(xb)
        q = Normal(mu, (0.5 * logvar).exp())
        z = q.sample((k,))  # (k, n, d)
        logits = model.decode(z.flatten(0, 1))  # (k * n, 1, 28, 28), sample-major like xb.repeat below
        log_px_z = bernoulli_log_likelihood(logits, xb.repeat(k, 1, 1, 1)).reshape(k, len(xb))
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        out.append((log_px_z + log_pz - q.log_prob(z).sum(-1)).T)
    return torch.cat(out)


@torch.no_grad()
def log_weights_one_by_one(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The same (N, k) log-weights, one sample j at a time, each density from torch.distributions."""
    model.eval()
    mu, logvar = model.encode(x)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    z = q.base_dist.sample((k,))  # the same draws as in test_log_weights (one chunk, same seed)
    prior_z = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    columns = [Independent(Bernoulli(logits=model.decode(z[j])), 3).log_prob(x) + prior_z.log_prob(z[j])
               - q.log_prob(z[j]) for j in range(k)]
    return torch.stack(columns, 1)


torch.manual_seed(5)
fast = test_log_weights(vae, val_x[:20], 8)
torch.manual_seed(5)
# float32 sums of 784 log-probabilities (each up to ~10 nats) carry rounding of ~1e-3 nats; a mis-ordered reshape
# pairs images with the wrong samples and is off by tens of nats, a missing density by several nats
lib.close(fast, log_weights_one_by_one(vae, val_x[:20], 8), "batched log-weights vs one sample at a time",
          rtol=0, atol=0.01)

torch.manual_seed(0)
log_w = test_log_weights(vae, test_x[: S["iw_images"]], S["iw_samples"])
test_neg_elbo = -log_w.mean().item()
test_nll_iw = -iw_bound(log_w).mean().item()
test_parts = evaluate_vae(vae, test_x, "test")
print(f"on {len(log_w):,} test images, k = {S['iw_samples']}: -ELBO = {test_neg_elbo:.2f} nats, "
      f"importance-weighted NLL = {test_nll_iw:.2f} nats ({test_nll_iw / math.log(2):.1f} bits per image); "
      f"rate {test_parts['test_rate']:.1f} + distortion {test_parts['test_distortion']:.1f} nats")
assert test_neg_elbo < independent_pixels_nll - 30, "the latent code should beat the independent-pixel baseline"
assert test_neg_elbo <= lib.pick(BARS), f"test -ELBO {test_neg_elbo:.1f} is above the bar {lib.pick(BARS)}"

# %% [markdown]
# ## 4 · Look inside
#
# Pictures and diagnostics choose nothing, but to keep the test digits for the reported numbers, this section looks
# at validation digits.
#
# **Reconstructions.** Encode a validation digit, take the posterior mean $\mu$, decode. We show the Bernoulli
# probabilities $\sigma(\ell)$, the *mean* of the decoder's distribution.

# %%
with torch.no_grad():
    vae.eval()
    originals = val_x[:10]
    reconstructed = torch.sigmoid(vae.decode(vae.encode(originals)[0]))
fig = lib.image_grid(torch.cat([originals, reconstructed]), ["input"] * 10 + ["reconstruction"] * 10, columns=10)
plt.show()
assert F.binary_cross_entropy(reconstructed, originals) < F.binary_cross_entropy(
    torch.sigmoid(vae.decode(vae.encode(originals.roll(1, 0))[0])), originals), "each reconstruction fits its own input best"

# %% [markdown]
# **Samples from the prior.** This is what the plain autoencoder could not do: draw $z \sim \mathcal N(0, I)$ and
# decode. The top rows show the decoder's mean $\sigma(\ell)$; the bottom rows are actual samples from the
# Bernoulli distribution, what the model says a binary digit looks like. The speckle is the price of independent
# pixels (section 7).

# %%
torch.manual_seed(3)
with torch.no_grad():
    prior_logits = vae.decode(torch.randn(30, S["latent"], device=device))
means = torch.sigmoid(prior_logits)
binary_samples = torch.bernoulli(means)
fig = lib.image_grid(torch.cat([means[:20], binary_samples[:10]]), columns=10)
fig.suptitle("20 decoder means from prior samples, then 10 Bernoulli samples", y=1.02)
plt.show()

# %% [markdown]
# Do they look like digits *as a population*? Two numbers, each compared with real digits, that a broken model gets
# wrong. The average of many decoded prior samples should be the average digit: the decoder learned from codes that
# the KL term keeps close to the prior, so sampling the prior should reproduce the data's mean image. And the
# samples should differ from each other nearly as much as real digits do: a collapsed model draws the same average
# digit every time, an untrained one a faint grey haze everywhere.

# %%
def prior_sample_statistics(model: VAE, count: int = 500, seed: int = 3) -> tuple[float, float]:
    """For `count` decoded prior samples: the RMS difference between their average image and the average training
    digit, and their pixel-wise standard deviation across samples, averaged over pixels."""
    torch.manual_seed(seed)
    with torch.no_grad():
        decoded = torch.sigmoid(model.eval().decode(torch.randn(count, model.latent, device=device)))
    return (decoded.mean(0) - split.train_x.mean(0)).pow(2).mean().sqrt().item(), decoded.std(0).mean().item()


real_gap = (split.val_x.mean(0) - split.train_x.mean(0)).pow(2).mean().sqrt().item()  # 500 real digits' own gap
real_spread = split.val_x.std(0).mean().item()
sample_gap, sample_spread = prior_sample_statistics(vae)
untrained_gap, untrained_spread = prior_sample_statistics(new_vae(S["latent"]))
print(f"mean-image gap (RMS): real validation digits {real_gap:.4f}, prior samples {sample_gap:.4f}, "
      f"untrained model {untrained_gap:.4f}")
print(f"pixel spread across images: real {real_spread:.3f}, prior samples {sample_spread:.3f}, "
      f"untrained model {untrained_spread:.3f}")
# Measured in the standard profile: real digits 0.010 / 0.19, prior samples about 0.02 / 0.14, an untrained model
# 0.17 / 0.02, the collapsed β = 784 model of section 5 0.01 / 0.01. The bounds sit between the working and the
# broken models.
SAMPLE_GAP_MAX, SAMPLE_SPREAD_MIN = 0.05, 0.5
assert sample_gap < SAMPLE_GAP_MAX, "the average prior sample should look like the average digit"
assert sample_spread > SAMPLE_SPREAD_MIN * real_spread, "prior samples should vary nearly as much as real digits"

# %% [markdown]
# **Interpolation.** Encode two validation digits, walk along the straight line between their means, decode each point.
# Because the KL term packs the codes into the prior's ball, the points in between decode to plausible digits,
# not to the double-exposed blends you get by averaging pixels.

# %%
first = {d: int(torch.nonzero(val_y == d)[0]) for d in range(10)}
with torch.no_grad():
    mu_a, mu_b = vae.encode(val_x[[first[2], first[7]]])[0]
    alphas = torch.linspace(0, 1, 10, device=device).unsqueeze(1)
    path = torch.sigmoid(vae.decode((1 - alphas) * mu_a + alphas * mu_b))
    pixel_blend = (1 - alphas.view(-1, 1, 1, 1)) * val_x[first[2]] + alphas.view(-1, 1, 1, 1) * val_x[first[7]]
fig = lib.image_grid(torch.cat([path, pixel_blend]), [f"{x:.2f}" for x in alphas.flatten().tolist()] + [""] * 10)
fig.suptitle("latent interpolation 2 → 7 (top) vs blending pixels (bottom)", y=1.02)
plt.show()
lib.close(path[0], torch.sigmoid(vae.decode(mu_a[None]))[0], "interpolation starts at the first digit", quiet=True)
lib.close(path[-1], torch.sigmoid(vae.decode(mu_b[None]))[0], "interpolation ends at the second digit", quiet=True)

# %% [markdown]
# **Which latent dimensions are used?** Averaged over validation images, the KL of each dimension says how many nats of
# information it carries. A dimension with KL ≈ 0 has $q(z_j\mid x) = p(z_j)$ for every image: the decoder ignores
# it. Burda et al.'s **active units** count the dimensions whose posterior mean actually varies across images
# ($\operatorname{Var}_x \mathbb E_q[z_j] > 0.01$).

# %%
def kl_per_dimension(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean KL per latent dimension over the images, and the variance across images of each posterior mean."""
    mu, logvar = lib.predict(model.encoder, x).chunk(2, dim=1)  # batched, eval mode
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
    return kl.mean(0).cpu(), mu.var(0).cpu()


kl_dims, mean_variance = kl_per_dimension(vae, val_x)
active_units = int((mean_variance > 0.01).sum())
lib.close(kl_dims.sum(), evaluate_vae(vae, val_x)["val_rate"], "KL per dimension sums to the rate", rtol=1e-4)
fig, ax = plt.subplots(figsize=(7, 2.8))
order = kl_dims.argsort(descending=True)
ax.bar(range(len(kl_dims)), kl_dims[order], color=["tab:blue" if v > 0.01 else "tab:gray" for v in mean_variance[order]])
ax.set(xlabel="latent dimension (sorted)", ylabel="mean KL (nats)",
       title=f"{active_units} of {S['latent']} dimensions active (grey: collapsed)")
plt.show()
print(f"active units: {active_units} of {S['latent']}")
assert active_units >= 4

# %% [markdown]
# ### A 2-D latent space you can steer
#
# A VAE with only two latent dimensions reconstructs less well, but its whole code space fits on a screen. We train
# one with the same step function, plot every validation digit at its posterior mean, and decode a grid of points: the
# KL term makes the space continuous and fills the prior's disk.

# %%
vae2d = new_vae(latent=2, seed=1)
optimizer2d = torch.optim.Adam(vae2d.parameters(), lr=S["lr"])
batches2d = lib.Batches(split.train_x, split.train_y, batch_size=S["batch_size"], seed=1)
history2d = lib.fit(vae_step(vae2d, optimizer2d), batches2d, S["map_epochs"], live=False,
                    evaluate=lambda: evaluate_vae(vae2d, val_x),
                    checkpoint=lib.checkpoint_path("06_vae", "vae2d", **S),
                    state={"model": vae2d, "optimizer": optimizer2d})
print(history2d)
mu2d = encode_means(vae2d, val_x).cpu()

quantiles = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 12))
grid_z = torch.cartesian_prod(quantiles.flip(0), quantiles)[:, [1, 0]]  # rows: z2 from high to low
with torch.no_grad():
    manifold = torch.sigmoid(vae2d.decode(grid_z.to(device))).cpu()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
points = left.scatter(mu2d[:, 0], mu2d[:, 1], c=val_y.cpu(), cmap="tab10", s=8)
left.legend(*points.legend_elements(), title="digit", fontsize=7, loc="upper right")
left.set(xlabel="$z_1$", ylabel="$z_2$", title="validation digits at their posterior means")
right.imshow(manifold.reshape(12, 12, 28, 28).permute(0, 2, 1, 3).reshape(12 * 28, 12 * 28), cmap="gray")
right.set(title="decoded grid over the prior's 5%–95% quantiles", xticks=[], yticks=[])
fig.tight_layout()
plt.show()
assert history2d.last("val_loss") < independent_pixels_nll, "even two latent dimensions beat ignoring z"

# %% [markdown]
# **Latent traversal widget.** Move the sliders: the point moves on the map and the decoder draws what that code
# means, live.

# %%
def draw_traversal(z1: float, z2: float) -> plt.Figure:
    """Mark (z1, z2) on the latent map and show the decoded digit."""
    with torch.no_grad():
        image = torch.sigmoid(vae2d.decode(torch.tensor([[z1, z2]], device=device)))[0, 0].cpu()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
    left.scatter(mu2d[:, 0], mu2d[:, 1], c=val_y.cpu(), cmap="tab10", s=4, alpha=0.6)
    left.plot([z1], [z2], marker="*", color="black", markersize=16)
    left.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xlabel="$z_1$", ylabel="$z_2$", title="latent map")
    right.imshow(image, cmap="gray", vmin=0, vmax=1)
    right.set(title=f"decode(z = ({z1:+.1f}, {z2:+.1f}))", xticks=[], yticks=[])
    fig.tight_layout()
    return fig


traversal = lib.widgets.Explorer(
    draw_traversal,
    z1=lib.widgets.slider(0.0, -3.0, 3.0, 0.1, "z₁"),
    z2=lib.widgets.slider(0.0, -3.0, 3.0, 0.1, "z₂"),
)
traversal

# %% [markdown]
# The widget's callback is ordinary code, so we test it, on a fresh copy (the one above may have been moved): move
# the sliders to where the validation 0s and 1s sit on the map; the decoded picture must change, and each must look
# more like that digit's average training image than like any other digit's.

# %%
class_means = torch.stack([split.train_x[split.train_y == d].mean(0) for d in range(10)]).cpu()  # (10, 1, 28, 28)
widget_check = lib.widgets.Explorer(draw_traversal, z1=lib.widgets.slider(0.0, -3.0, 3.0, 0.1, "z₁"),
                                    z2=lib.widgets.slider(0.0, -3.0, 3.0, 0.1, "z₂"))
for digit in (0, 1):
    centre = mu2d[val_y.cpu() == digit].median(0).values
    redraws = widget_check.redraws
    widget_check.controls["z1"].value = round(centre[0].item(), 1)
    widget_check.controls["z2"].value = round(centre[1].item(), 1)
    shown = torch.tensor(widget_check.figure.axes[1].images[0].get_array())
    nearest = int(((class_means[:, 0] - shown) ** 2).flatten(1).sum(1).argmin())
    print(f"digit {digit}: sliders at {widget_check.values}, decoded image is nearest to the mean '{nearest}'")
    z1, z2 = widget_check.values["z1"], widget_check.values["z2"]
    assert widget_check.redraws > redraws and widget_check.figure.axes[1].get_title() == f"decode(z = ({z1:+.1f}, {z2:+.1f}))"
    assert nearest == digit

# %% [markdown]
# ## 5 · β-VAE: rate against distortion, and posterior collapse
#
# Weighting the KL term by $\beta$ gives the **β-VAE** objective
# $\mathbb E_q[\log p(x\mid z)] - \beta\,\mathrm{KL}(q\,\|\,p)$. It is the ELBO only for $\beta = 1$ (a formula that
# writes the ELBO with a β in it mixes up the two). In information terms the KL is the **rate (码率)**, the number of
# nats the code carries about the image, and $-\log p(x\mid z)$ is the **distortion (失真)**. Small β buys sharp
# reconstructions with a costly, irregular code; large β forces a cheap code and blurrier reconstructions. We train
# one model per β (same data, same step function, fewer epochs) and plot each on the rate–distortion plane of the
# validation digits. On the dashed lines distortion + rate, the negative ELBO, is constant.
#
# The largest value, β = 784, is the mean-reduction pitfall of section 2.1. All the numbers here are on the validation
# digits: β is a setting like the number of epochs, and if what you want is the best likelihood, you choose it by the
# validation −ELBO. It should pick a β near 1 (β = 1 makes the loss the ELBO itself; after only a few epochs
# β = 0.5 can come out marginally ahead).

# %%
BETAS = (0.5, 1.0, 2.0, 8.0, 784.0)
sweep = {}
for beta in BETAS:
    model_b = new_vae(S["latent"], channels=16, seed=2)
    optimizer_b = torch.optim.Adam(model_b.parameters(), lr=S["lr"])
    batches_b = lib.Batches(split.train_x, split.train_y, batch_size=S["batch_size"], seed=2)
    lib.fit(vae_step(model_b, optimizer_b, beta=beta), batches_b, S["beta_epochs"], live=False, progress=False,
            checkpoint=lib.checkpoint_path("06_vae", f"beta{beta:g}", **S), state={"model": model_b, "optimizer": optimizer_b})
    result = evaluate_vae(model_b, val_x)
    result["active"] = int((kl_per_dimension(model_b, val_x)[1] > 0.01).sum())
    with torch.no_grad():
        result["recon"] = torch.sigmoid(model_b.decode(model_b.encode(val_x[:10])[0]))
    result["samples"] = prior_sample_statistics(model_b)
    sweep[beta] = result
    print(f"beta={beta:>5g}: rate {result['val_rate']:6.2f} nats, distortion {result['val_distortion']:6.1f} nats, "
          f"-ELBO {result['val_loss']:6.1f}, active units {result['active']:2d}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
rates = [sweep[b]["val_rate"] for b in BETAS]
distortions = [sweep[b]["val_distortion"] for b in BETAS]
left.plot(rates, distortions, "o-")
for b, r, d in zip(BETAS, rates, distortions, strict=True):
    left.annotate(f"β={b:g}", (r, d), textcoords="offset points", xytext=(5, 5))
for total in range(80, 260, 20):
    left.plot([0, total], [total, 0], "--", color="gray", lw=0.5)
left.set(xlim=(-1, max(rates) * 1.15), ylim=(min(distortions) * 0.9, max(distortions) * 1.05),
         xlabel="rate = KL (nats)", ylabel="distortion = −log p(x|z) (nats)", title="rate–distortion trade-off")
right.bar([f"{b:g}" for b in BETAS], [sweep[b]["active"] for b in BETAS])
right.set(xlabel="β", ylabel="active latent units", title=f"units in use (of {S['latent']})")
fig.tight_layout()
plt.show()
fig = lib.image_grid(torch.cat([val_x[:10]] + [sweep[b]["recon"] for b in (0.5, 8.0, 784.0)]),
                     ["input"] * 10 + ["β=0.5"] * 10 + ["β=8"] * 10 + ["β=784"] * 10, columns=10)
plt.show()
assert rates[0] > rates[1] > rates[2] > rates[3] > rates[4], "a larger beta must buy a lower rate"
assert distortions[0] < distortions[2] < distortions[3] < distortions[4], "... and pay with a higher distortion"
assert sweep[784.0]["val_rate"] < 1.0 and sweep[784.0]["active"] <= 1, "beta = 784 should collapse the posterior"
recon_spread = {b: sweep[b]["recon"].flatten(1).std(0).mean().item() for b in (0.5, 784.0)}
assert recon_spread[784.0] < 0.5 * recon_spread[0.5], "collapsed reconstructions all look alike"
best_beta = min(BETAS, key=lambda b: sweep[b]["val_loss"])
print(f"best validation -ELBO: beta = {best_beta:g}")
print("prior samples (mean-image gap, spread):", {b: tuple(round(v, 3) for v in sweep[b]["samples"]) for b in BETAS})
assert best_beta in (0.5, 1.0, 2.0), "the likelihood is best for beta near 1, the value that makes the loss the ELBO"
collapsed_gap, collapsed_spread = sweep[784.0]["samples"]
assert collapsed_spread < SAMPLE_SPREAD_MIN * real_spread, "the collapsed model fails the prior-sample check of section 4"

# %% [markdown]
# **Posterior collapse (后验坍塌)**, explained. For each latent dimension the objective weighs a cost, β × its KL,
# against a benefit, the reconstruction nats it saves. Early in training the decoder is poor, so a dimension saves
# little; the KL gradient then pulls $q(z_j\mid x)$ onto the prior for *every* image, the dimension carries no
# information, the decoder learns to ignore it, and nothing pulls it back. With β = 784 every dimension loses this
# race: the KL drops to zero, the encoder's output no longer depends on the input, and every reconstruction is the
# same average digit (bottom row above), while the loss still looks "fine". The same thing happens at β = 1 when the
# decoder is powerful enough to model images without $z$ (an autoregressive PixelCNN or a language-model decoder
# for text), and it happens dimension by dimension: Burda et al. (2016) found that a VAE given 50 latent dimensions on
# MNIST kept only about 20 of them active (try `latent=50` in the settings and watch the bar chart of section 4).
#
# Remedies: KL annealing (start with β ≈ 0 and ramp it up to 1), *free bits* (don't penalise the first λ nats of
# each dimension's KL), weaker or dropout-masked decoders, and, first of all, summing the reconstruction loss over
# pixels instead of averaging it.
#
# ## 6 · Applications in industry
#
# **Generation and data augmentation.** Sampling the prior gives new data; sampling the *posterior* of one
# real example gives variations of it that keep its identity, a way to augment small datasets (rare defects in
# manufacturing, rare classes in medical imaging). Conditional VAEs add the label as an input to generate a chosen
# class. In today's large image generators (Stable Diffusion), a VAE is the first stage: it compresses 512×512
# images into a 64×64 latent grid where the diffusion model works, then decodes back to pixels.

# %%
with torch.no_grad():
    vae.eval()
    mu_one, logvar_one = vae.encode(val_x[first[5] : first[5] + 1])
    variations = torch.sigmoid(vae.decode(mu_one + (0.5 * logvar_one).exp() * torch.randn(9, S["latent"], device=device)))
fig = lib.image_grid(torch.cat([val_x[first[5] : first[5] + 1], variations]), ["input"] + ["q(z|x) sample"] * 9)
plt.show()
assert variations.std(0).mean() > 1e-3, "posterior samples should differ from each other"

# %% [markdown]
# **Anomaly detection.** A likelihood model scores how typical an input is: a high negative ELBO flags an input
# the model finds surprising. We score the test digits against two kinds of outliers: 28×28 patches of real
# photographs (from scikit-learn's sample images) and test digits flipped upside down. The ROC AUC (ROC曲线下面积)
# is the probability that a random outlier scores higher than a random normal digit (1.0 = perfect, 0.5 = chance).

# %%
def photo_patches(count: int, seed: int = 0) -> torch.Tensor:
    """Random 56×56 grey crops of the sample photos, averaged down to 28×28, in [0, 1]."""
    photos = [torch.tensor(load_sample_image(name), dtype=torch.float32).mean(-1) / 255
              for name in ("china.jpg", "flower.jpg")]
    g = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(count):
        photo = photos[i % 2]
        top = int(torch.randint(0, photo.shape[0] - 56, (1,), generator=g))
        left = int(torch.randint(0, photo.shape[1] - 56, (1,), generator=g))
        crops.append(photo[top : top + 56, left : left + 56])
    return F.avg_pool2d(torch.stack(crops).unsqueeze(1), 2)


count = min(500, len(test_x))
photos_binary = torch.bernoulli(photo_patches(count), generator=torch.Generator().manual_seed(1)).to(device)
flipped = test_x[:count].flip(2)
torch.manual_seed(0)
score = {name: -test_log_weights(vae, images, k=5).mean(1).cpu()
         for name, images in [("digits", test_x[:count]), ("photos", photos_binary), ("flipped", flipped)]}
auc = {name: roc_auc_score(np.r_[np.zeros(count), np.ones(count)], torch.cat([score["digits"], score[name]]).numpy())
       for name in ("photos", "flipped")}
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [2, 1]})
bins = np.linspace(0, float(torch.cat([score["digits"], score["flipped"]]).max()) * 1.05, 60)
for name, label in (("digits", "test digits"), ("flipped", f"flipped digits (AUC {auc['flipped']:.2f})")):
    left.hist(score[name].numpy(), bins=bins, alpha=0.6, label=label)
left.set(xlabel="−ELBO (nats)", ylabel="images", title=f"anomaly scores; photo patches score {score['photos'].median():.0f} (off the chart)")
left.legend()
right.imshow(torch.cat([photos_binary[:4], flipped[:4]]).cpu().reshape(2, 4, 28, 28).permute(0, 2, 1, 3).reshape(56, 112),
             cmap="gray")
right.set(title="outliers: photo patches, flipped digits", xticks=[], yticks=[])
fig.tight_layout()
plt.show()
print({k: round(v, 3) for k, v in auc.items()})
assert auc["photos"] > 0.95 and auc["flipped"] > 0.7

# %% [markdown]
# Flipped 0s, 1s and 8s are still perfectly good digits, so no score can separate them; the AUC for flipped digits
# is well above chance but not 1. (A famous warning: likelihood models sometimes give *higher* likelihood to simple
# outliers than to their own data, Nalisnick et al. 2019, so check on your own outliers before you deploy.)
#
# **Compression (压缩).** The negative ELBO in bits is a code length you can actually achieve: *bits-back coding*
# (BB-ANS, Townsend et al. 2019) turns a VAE into a lossless compressor whose average message length approaches it.
# Compare with storing the binary image raw (784 bits) and with zlib, a general-purpose compressor that gets to see
# the whole test set at once (an advantage the VAE does not need).

# %%
packed = np.packbits(test_x.cpu().numpy().astype(np.uint8).reshape(len(test_x), -1), axis=1)
zlib_bits = 8 * len(zlib.compress(packed.tobytes(), 9)) / len(test_x)
vae_bits = test_neg_elbo / math.log(2)
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.barh(["raw bits", "zlib (whole test set)", "VAE −ELBO (bits-back)"], [784, zlib_bits, vae_bits],
        color=["tab:gray", "tab:orange", "tab:blue"])
ax.set(xlabel="bits per binary MNIST image", title="lossless compression of the binarised test digits")
fig.tight_layout()
plt.show()
print(f"raw 784 bits, zlib {zlib_bits:.0f} bits, VAE {vae_bits:.0f} bits per image")
assert vae_bits < zlib_bits < 784

# %% [markdown]
# **Molecule and material design.** Gómez-Bombarelli et al. (2018) trained a VAE on molecules written as SMILES
# strings, together with a *property predictor* that reads the latent code. Its continuous latent space lets an
# optimiser move through chemistry: encode a known molecule, follow the gradient of the predicted property
# (solubility, drug-likeness, a material's band gap) in $z$, decode the improved code into a new candidate, and check
# the candidate with an independent test (a simulation or the lab). The same recipe runs here with digits for
# molecules and "is a 7" for the property. The predictor is a logistic regression on the training codes $\mu(x)$;
# the objective is $\log P(\text{7}\mid z) + \lambda \log p(z)$, whose second term keeps the search where the
# decoder was trained (without it an optimiser may find codes the predictor loves and the decoder cannot draw, the
# latent-space version of proposing molecules nobody can synthesise).
#
# The independent check must not go through the VAE: re-encoding the design and asking the same predictor would
# only confirm that the encoder and the predictor agree with each other. Like the lab in the molecule story, our
# check looks at the product itself: a second classifier that reads **raw pixels**, trained on the grey training
# digits, judged on the validation digits, and never shown a VAE code.

# %%
train_codes = encode_means(vae, binarise(split.train_x)).cpu().numpy()
val_codes = encode_means(vae, val_x).cpu().numpy()
predictor = LogisticRegression(max_iter=2000).fit(train_codes, split.train_y.cpu().numpy())
print(f"property predictor on latent codes: validation accuracy {predictor.score(val_codes, val_y.cpu().numpy()):.3f}")

n_pixel = min(len(split.train_x), 10_000)  # enough for a linear classifier, and quick in the full profile too
pixel_judge = LogisticRegression(C=0.05, max_iter=500).fit(split.train_x[:n_pixel].flatten(1).cpu().numpy(),
                                                           split.train_y[:n_pixel].cpu().numpy())
judge_accuracy = pixel_judge.score(split.val_x.flatten(1).cpu().numpy(), val_y.cpu().numpy())
print(f"independent judge (logistic regression on raw pixels): validation accuracy {judge_accuracy:.3f}")
assert judge_accuracy > 0.85, "the pixel classifier should read digits well enough to judge a design"
W = torch.tensor(predictor.coef_, dtype=torch.float32, device=device)
b = torch.tensor(predictor.intercept_, dtype=torch.float32, device=device)


def log_property(z: torch.Tensor, target: int) -> torch.Tensor:
    """log P(digit = target | z) under the latent-space predictor."""
    return torch.log_softmax(z @ W.T + b, dim=-1)[..., target]


def design(start: torch.Tensor, target: int, prior_weight: float = 0.1, steps: int = 100,
           keep: tuple[int, ...] = (10, 25, 50, 100)) -> list[torch.Tensor]:
    """Gradient ascent on log P(target | z) + prior_weight * log p(z) from `start`; codes at the `keep` steps."""
    z = start.clone().requires_grad_(True)
    optimizer_z = torch.optim.Adam([z], lr=0.05)
    vae.eval().requires_grad_(False)  # only z moves
    codes = [start]
    for i in range(1, steps + 1):
        objective = log_property(z, target).sum() - prior_weight * 0.5 * z.pow(2).sum()
        optimizer_z.zero_grad()
        (-objective).backward()
        optimizer_z.step()
        if i in keep:
            codes.append(z.detach().clone())
    vae.requires_grad_(True)
    return codes


start_code = torch.tensor(val_codes[first[1] : first[1] + 1], device=device)
codes = design(start_code, target=7)
with torch.no_grad():
    frames = torch.sigmoid(vae.decode(torch.cat(codes)))
probabilities = pixel_judge.predict_proba(frames.flatten(1).cpu().numpy())  # the judge's view of every frame
judged, judged_class = probabilities[:, 7], probabilities.argmax(1)
p_start, p_code = (log_property(c, 7).exp().item() for c in (start_code, codes[-1]))
fig = lib.image_grid(frames, ["start: a 1"] + [f"step {k}" for k in (10, 25, 50, 100)], columns=5, size=1.5)
fig.suptitle("latent-space design: turn a 1 into a 7", y=1.12)
plt.show()
print(f"P(7) by the latent predictor: start {p_start:.3f}, design {p_code:.3f} | by the pixel judge: "
      f"start {judged[0]:.3f}, design {judged[-1]:.3f} (the judge reads the design as a {judged_class[-1]}); "
      f"|z| {codes[-1].norm():.2f}")
assert p_start < 0.1 and judged[0] < 0.1, "the start should not be a 7, for either classifier"
assert judged_class[-1] == 7, "the pixel judge, which never saw a VAE code, should read the decoded design as a 7"
assert codes[-1].norm() < math.sqrt(S["latent"]) + 3, "the design should stay in the prior's typical region"

# %% [markdown]
# ## 7 · Challenges and limits
#
# * **Blurry samples.** With independent pixels, the decoder cannot say "a stroke here *or* there"; its best mean is a
#   soft average of both, and sampling pixels independently gives speckle (section 4). GANs (chapter 07) and
#   diffusion models produce sharper images; VAEs with richer decoders (autoregressive, or a VQ-VAE's discrete codes
#   with a learned prior) close much of the gap, at the risk of the next point.
# * **Posterior collapse.** A decoder that can model the data without $z$ makes the encoder pointless (section 5).
# * **Evaluation.** The ELBO is only a bound; the importance-weighted estimate is tighter (here the gap is printed
#   below), but good likelihood does not imply good-looking samples, and vice versa. Likelihoods are comparable only
#   on the same data in the same units (the binarised MNIST in nats, here): numbers from grey-level "BCE" are not.
#   For images, sample-quality metrics such as the Fréchet distance (chapter 07) are used alongside.
# * **The amortisation gap.** One encoder for all images gives a worse $q$ than optimising $q$ per image; part of the
#   ELBO gap is the encoder's, not the model's.

# %%
print(f"-ELBO {test_neg_elbo:.2f}, importance-weighted NLL (k={S['iw_samples']}) {test_nll_iw:.2f}: "
      f"the ELBO is at least {test_neg_elbo - test_nll_iw:.2f} nats per image loose")
assert test_neg_elbo - test_nll_iw > 0.1

# %% [markdown]
# ## 8 · Exercises
#
# **Exercise 1: reparameterised sampling.** Write `my_sample(mu, logvar, eps)` that returns the reparameterised
# sample $z = \mu + \sigma\varepsilon$ given the log-variance. The test checks the values and that gradients reach
# `mu` and `logvar`.

# %%
def test_sample(fn) -> None:
    mu = torch.tensor([[0.5, -1.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    eps = torch.tensor([[1.0, 1.0]])
    z = fn(mu, logvar, eps)
    lib.close(z, torch.tensor([[1.5, 1.0]]), "z", quiet=True)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None, "gradients must reach mu and logvar"
    lib.close(logvar.grad, torch.tensor([[0.5, 1.0]]), "dz/dlogvar = sigma * eps / 2", quiet=True)


def my_sample(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_sample(my_sample), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_sample(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + (0.5 * logvar).exp() * eps


lib.self_check(lambda: test_sample(solution_sample), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_sample(lambda mu, logvar, eps: mu + logvar.exp() * eps),
                      "the variance instead of the standard deviation")
lib.check.must_reject(lambda: test_sample(lambda mu, logvar, eps: mu + (0.5 * logvar).exp() * torch.randn_like(mu)),
                      "fresh noise instead of the given eps")
lib.check.must_reject(lambda: test_sample(lambda mu, logvar, eps: mu.detach() + (0.5 * logvar).exp() * eps),
                      "a detached mean, so that no gradient reaches mu")

# %% [markdown]
# **Exercise 2: KL between two diagonal Gaussians.** Generalise section 2.3 to a learned prior:
# $\mathrm{KL}(\mathcal N(\mu_1, \sigma_1^2)\,\|\,\mathcal N(\mu_2, \sigma_2^2)) =
# \sum_j \big[\log\frac{\sigma_{2j}}{\sigma_{1j}} + \frac{\sigma_{1j}^2 + (\mu_{1j}-\mu_{2j})^2}{2\sigma_{2j}^2} - \frac12\big]$.
# Write `my_kl(mu1, logvar1, mu2, logvar2)` (sum over the last dimension); the test compares with
# `torch.distributions`.

# %%
def test_kl(fn) -> None:
    g = torch.Generator().manual_seed(0)
    mu1, lv1, mu2, lv2 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    expected = kl_divergence(Normal(mu1, (0.5 * lv1).exp()), Normal(mu2, (0.5 * lv2).exp())).sum(-1)
    lib.close(fn(mu1, lv1, mu2, lv2), expected, "KL between diagonal Gaussians", quiet=True)
    lib.close(fn(mu1, lv1, torch.zeros_like(mu1), torch.zeros_like(lv1)), gaussian_kl(mu1, lv1),
              "special case: standard normal prior", quiet=True)


def my_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_kl(my_kl), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    return (0.5 * (logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2).pow(2)) / (2 * logvar2.exp()) - 0.5).sum(-1)


lib.self_check(lambda: test_kl(solution_kl), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_kl(lambda mu1, lv1, mu2, lv2: solution_kl(mu2, lv2, mu1, lv1)),
                      "the arguments swapped: KL(p || q) instead of KL(q || p)")
lib.check.must_reject(lambda: test_kl(
    lambda mu1, lv1, mu2, lv2: ((lv2 - lv1) + (lv1.exp() + (mu1 - mu2).pow(2)) / (2 * lv2.exp()) - 0.5).sum(-1)),
    "log(sigma2 / sigma1) written as the difference of log-variances, without the 1/2")

# %% [markdown]
# **Exercise 3: free bits.** A remedy for posterior collapse: charge each latent dimension at least λ nats, so the
# optimiser gains nothing by pushing a dimension's KL below λ. Write `free_bits_kl(kl_per_dim, lam)` that takes the
# (N, d) per-image, per-dimension KL, averages it over the batch, clamps each dimension's average from below at
# `lam`, and returns the sum over dimensions (Kingma et al., 2016).

# %%
def test_free_bits(fn) -> None:
    # dimension means 0.1 (below lambda), 2.0 and 0.8 (above it, though one of its images is below)
    kl = torch.tensor([[0.0, 1.0, 0.1], [0.2, 3.0, 1.5]], requires_grad=True)
    value = fn(kl, 0.5)
    lib.close(value, torch.tensor(0.5 + 2.0 + 0.8), "free-bits KL", quiet=True)
    value.backward()
    lib.close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]), "no gradient below lambda", quiet=True)


def free_bits_kl(kl_per_dim: torch.Tensor, lam: float) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_free_bits(free_bits_kl), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_free_bits_kl(kl_per_dim: torch.Tensor, lam: float) -> torch.Tensor:
    return kl_per_dim.mean(0).clamp(min=lam).sum()


lib.self_check(lambda: test_free_bits(solution_free_bits_kl), "Exercise 3 (solution)", strict=True)
lib.check.must_reject(lambda: test_free_bits(lambda kl, lam: kl.clamp(min=lam).mean(0).sum()),
                      "clamping each image's KL before averaging over the batch")
lib.check.must_reject(lambda: test_free_bits(lambda kl, lam: kl.mean(0).sum().clamp(min=lam)),
                      "clamping the total instead of each dimension")
lib.check.must_reject(lambda: test_free_bits(lambda kl, lam: kl.sum(0).clamp(min=lam).sum()),
                      "summing over the batch instead of averaging")

# %% [markdown]
# **Exercise 4 (think, then try).** (a) Train the main VAE with the reconstruction term averaged over pixels, as
# `reduction="mean"` would do: in `vae_step`, change the loss to `(distortion / 784 + beta * rate).mean()`, then run
# the cell that defines `vae_step`, the cell that creates `vae`, and the training and measurement cells of section 3
# again. `lib.fit` notices that the step's code changed and trains from scratch instead of resuming the finished
# run (it sets the old checkpoint aside as `*.stale.pt`; when you undo the change, the original run trains again).
# Which point of the β sweep does the new model land on, and why? (The chapter's bar check will fail: that is the
# point.) (b) Why can the importance-weighted NLL be computed for a VAE but not for the plain autoencoder of chapter
# 05? (c) Your decoder outputs a Gaussian with a fixed variance $s^2$ instead of a Bernoulli: which β does training
# with the summed squared error plus the KL correspond to?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
**(a) The β = 784 point: a collapsed posterior.** Dividing the distortion by 784 gives
$\\tfrac{{1}}{{784}}\\big(\\text{{distortion}} + 784\\cdot\\text{{rate}}\\big)$, the β = 784 objective times a
constant. Adam divides every gradient by its own running size, so a constant factor on the loss barely changes the
steps: it is the β = 784 run. In the sweep that run ended with a rate of {sweep[784.0]["val_rate"]:.2f} nats and
{sweep[784.0]["active"]} active unit(s), against {sweep[1.0]["val_rate"]:.1f} nats and {sweep[1.0]["active"]} for β = 1:
the KL is driven to zero, the code carries no information, every reconstruction is the same average digit, and
the −ELBO (measured correctly, summed over pixels) ends near the independent-pixel baseline of
{independent_pixels_nll:.0f} nats instead of below the bar.

**(b)** Importance weighting needs three *densities* at sampled codes: the likelihood $p(x\\mid z)$, the prior
$p(z)$ and the proposal $q(z\\mid x)$, to form $w = p(x\\mid z)\\,p(z)/q(z\\mid x)$ and average it. The plain
autoencoder has none of them: its encoder is deterministic (a point mass, with no density to divide by), nothing
says which codes are likely (there is no prior, which is also why chapter 05 could not sample), and its MSE on grey
pixels is not a normalised probability of an image. It defines no $p(x)$, so there is nothing to estimate.

**(c) β = 2s².** With $p(x\\mid z) = \\mathcal N(\\hat x(z), s^2 I)$,
$-\\log p(x\\mid z) = \\lVert x - \\hat x(z) \\rVert^2 / (2s^2) + \\tfrac{{D}}{{2}}\\log(2\\pi s^2)$. The constant
does not move the optimum; multiplying the negative ELBO by $2s^2$ gives
$\\lVert x - \\hat x \\rVert^2 + 2s^2\\,\\mathrm{{KL}}$. So "summed squared error + β·KL" is the ELBO of a
Gaussian decoder with $s^2 = \\beta/2$: a small β claims a precise decoder (sharp reconstructions, weak prior), a
large β a noisy one. The *mean* squared error plus the KL is β = D = 784 again, $s^2 = 392$ on pixels in [0, 1]:
the same collapse as in (a).
""")

# ## 9 · Summary and FAQ
#
# * A VAE is a latent-variable model $p(z)\,p_\theta(x\mid z)$ trained with an encoder $q_\phi(z\mid x)$ by maximising
#   the ELBO $= \mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q\,\|\,p(z)) \le \log p(x)$; the gap is
#   $\mathrm{KL}(q\,\|\,p(z\mid x))$. We checked each step on an exactly solvable model.
# * The reparameterisation $z = \mu + \sigma\varepsilon$ lets gradients flow through sampling with low variance; the
#   Gaussian KL has a closed form, checked against Monte Carlo and `torch.distributions`.
# * Sum the Bernoulli log-likelihood over pixels on binary data; averaging is a hidden β = 784.
# * Our convolutional VAE, trained on 3,500 digits in the standard profile (its length checked on 500 validation
#   digits), reaches the test negative ELBO and the tighter importance-weighted NLL printed above (nats per image); it
#   samples, interpolates and compresses better than zlib.
# * β trades rate for distortion; too much KL pressure collapses the posterior.
#
# **FAQ.** *Why not decode with a sigmoid and use `F.binary_cross_entropy`?* It is the same loss in exact arithmetic,
# but `binary_cross_entropy_with_logits`/`logsigmoid` stay finite when the sigmoid saturates. *Why is my −ELBO
# different from a paper's?* Check the data (binarised? how?), the units (nats vs bits, per image vs per pixel) and
# the estimator (ELBO vs importance-weighted). *Why do my samples look blurrier than the reconstructions?* Prior
# samples land in regions the encoder rarely used; the mismatch between the aggregate posterior and the prior is one
# of the things better priors (VampPrior, flows) fix.

# %%
lib.save_results("06_vae", {
    "test_neg_elbo": test_neg_elbo,
    "test_nll_iw": test_nll_iw,
    "test_rate": test_parts["test_rate"],
    "test_distortion": test_parts["test_distortion"],
    "active_units": active_units,
    "photo_anomaly_auc": auc["photos"],
    "flipped_anomaly_auc": auc["flipped"],
    "vae_bits_per_image": vae_bits,
    "zlib_bits_per_image": zlib_bits,
})
