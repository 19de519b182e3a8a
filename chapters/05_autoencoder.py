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
# # 05 · Autoencoders: compress, reconstruct, detect what does not fit
#
# An **autoencoder (自编码器)** is a network trained to give back its own input. That sounds useless until
# you squeeze the data through a narrow middle layer: to rebuild a 784-pixel digit from 16 numbers, the network
# has to discover what digits have in common. The same trick underlies dimensionality reduction, denoising,
# anomaly detection and, one chapter later, the variational autoencoder that can *generate* new data.
#
# **Goals**
# 1. Write the encoder and decoder as equations and code, and compute the two reconstruction losses (MSE and
#    binary cross-entropy) by hand, checked against PyTorch.
# 2. Derive principal component analysis (PCA) from the covariance matrix and show that a *linear* autoencoder
#    with $k$ units learns the same subspace (principal angles, and test error against scikit-learn's PCA).
# 3. Train a nonlinear autoencoder that beats PCA at the same bottleneck size ($k = 16$) on held-out digits,
#    with every choice made on a validation split and the test digits read once at the end.
# 4. Look inside: a 2-D latent map coloured by digit, and a denoising autoencoder driven by a noise-level widget.
# 5. Use reconstruction error for anomaly detection: train on digits 0–4, flag 5–9; choose the detector's size
#    and its alarm threshold on validation digits (test ROC AUC ≥ 0.8 in the standard profile).
# 6. See the limits: memorisation, and why you cannot sample new digits from a plain autoencoder.
#
# **Time:** quick ≈ 1 min · standard ≈ 1 min on 2 CPU cores · full (GPU) ≈ 2 min.

# %%
import math
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

import lib

device = lib.setup(seed=0)

# %% [markdown]
# Everything a profile changes sits in the next cell: epochs for each of the models we train, the code sizes the
# anomaly detector chooses from, and the quality bars the chapter asserts on the test digits at the end of each
# experiment. The epoch counts were set by watching the validation curves that each training run draws.

# %%
SETTINGS = {
    "quick": dict(epochs=30, linear_epochs=600, linear_lr=3e-3, map_epochs=20, dae_epochs=20, anomaly_epochs=40,
                  hidden=256, batch_size=64, detector_codes=(4, 8, 16)),
    "standard": dict(epochs=40, linear_epochs=60, linear_lr=1e-2, map_epochs=25, dae_epochs=25, anomaly_epochs=60,
                     hidden=256, batch_size=64, detector_codes=(4, 8, 16)),
    "full": dict(epochs=30, linear_epochs=10, linear_lr=1e-2, map_epochs=15, dae_epochs=15, anomaly_epochs=30,
                 hidden=512, batch_size=128, detector_codes=(4, 8, 16)),
}
BARS = {
    # ae_vs_pca: largest allowed ae_test_mse / pca_test_mse (below 1 means the autoencoder wins)
    # linear_excess: largest allowed (linear AE test MSE - PCA test MSE) / PCA test MSE
    # max_angle: largest allowed principal angle (degrees) between the linear AE's and PCA's subspaces
    # anomaly_auc: smallest allowed ROC AUC for "digits 5-9 are anomalies"
    "quick": dict(ae_vs_pca=1.0, linear_excess=0.01, max_angle=10.0, anomaly_auc=0.7),
    "standard": dict(ae_vs_pca=0.8, linear_excess=0.01, max_angle=5.0, anomaly_auc=0.8),
    "full": dict(ae_vs_pca=0.7, linear_excess=0.01, max_angle=5.0, anomaly_auc=0.85),
}
S, BAR = lib.pick(SETTINGS), lib.pick(BARS)
K = 16  # bottleneck size of the autoencoder-vs-PCA comparison
print(lib.get_profile(), S)
print("bars:", BAR)

# %% [markdown]
# ## 1 · Concepts
#
# * The **encoder (编码器)** $f$ maps an input $x \in \mathbb{R}^{D}$ (here $D = 784$ pixels) to a **code**
#   or **latent representation (潜在表示)** $z = f(x) \in \mathbb{R}^{k}$.
# * The **decoder (解码器)** $g$ maps the code back to a **reconstruction (重构)** $\hat x = g(z)$.
# * Training minimises a **reconstruction loss (重构损失)** between $\hat x$ and $x$. No labels are used: this
#   is **unsupervised learning (无监督学习)**, or self-supervised: the input is its own target.
# * With $k < D$ the middle layer is a **bottleneck (瓶颈)** and the autoencoder is **undercomplete**: it must
#   keep what matters and drop the rest, a form of **dimensionality reduction (降维)**. With $k \ge D$ and no
#   other constraint it can learn to copy its input, which teaches it nothing.
# * **Principal component analysis (主成分分析, PCA)** is the classic linear answer to the same question; a
#   linear autoencoder rediscovers it, a nonlinear one can do better.
# * A **denoising autoencoder (去噪自编码器)** gets a corrupted input and must return the clean one.
# * **Anomaly detection (异常检测)**: a model that reconstructs normal data well reconstructs unusual data
#   badly, so the reconstruction error becomes an anomaly score.
#
# The data: the course's real handwritten digits (MNIST, 28×28 grey levels in [0, 1]), in three splits as in
# chapter 02. Models learn from `train`; every choice we make by looking at results (how long to train, how big a
# detector, where to put an alarm threshold) is made on `val`; `test` is read once, at the end of each experiment,
# to report how the chosen model does on digits that influenced nothing.

# %%
split = lib.load_digits().to(device)
print(split)
D = 28 * 28
X_train, X_val, X_test = split.train_x.flatten(1), split.val_x.flatten(1), split.test_x.flatten(1)
lib.image_grid(split.train_x[:20], [str(int(c)) for c in split.train_y[:20]], columns=10)
plt.show()

# %% [markdown]
# ## 2 · The encoder and the decoder
#
# Our autoencoder is two small multilayer perceptrons back to back. With hidden width $h$ and code size $k$:
#
# $$ z = f(x) = W_2\,\mathrm{ReLU}(W_1 x + b_1) + b_2 \in \mathbb{R}^k,\qquad
#    \hat x = g(z) = \sigma\big(W_4\,\mathrm{ReLU}(W_3 z + b_3) + b_4\big) \in (0, 1)^{D}, $$
#
# where $\sigma(a) = 1/(1 + e^{-a})$ is the **sigmoid**, which keeps every reconstructed pixel between 0 and 1,
# like the real pixels. The code layer has no activation: codes can be any real numbers.
#
# The decoder ends with `nn.Unflatten`, so the reconstruction has the *same shape as the input*, (N, 1, 28, 28).
# **A common pitfall:** a decoder that ends in a flat 784-vector while the target is still an image. PyTorch then
# refuses to compare them (or, worse, *broadcasts* two shapes that happen to be compatible into a meaningless
# loss), so check the shape once, as below.

# %%
class AutoEncoder(nn.Module):
    """784 → hidden → k → hidden → 784. `logits` gives pre-sigmoid outputs (for training with BCE);
    calling the model gives the reconstruction in pixel space."""

    def __init__(self, k: int, hidden: int = 256) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, D),
                                     nn.Unflatten(1, (1, 28, 28)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


torch.manual_seed(0)
demo = AutoEncoder(k=K, hidden=32).to(device)
x = split.train_x[:8]


def autoencode_by_hand(x: torch.Tensor, model: AutoEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The two equations above with the model's own weights; returns (z, x_hat) with x_hat as images."""
    (W1, b1), (W2, b2) = (model.encoder[1].weight, model.encoder[1].bias), (model.encoder[3].weight, model.encoder[3].bias)
    (W3, b3), (W4, b4) = (model.decoder[0].weight, model.decoder[0].bias), (model.decoder[2].weight, model.decoder[2].bias)
    flat = x.reshape(len(x), -1)
    z = (flat @ W1.T + b1).clamp(min=0) @ W2.T + b2
    a = (z @ W3.T + b3).clamp(min=0) @ W4.T + b4
    return z, (1 / (1 + torch.exp(-a))).reshape(x.shape)


with torch.no_grad():
    z_hand, x_hat_hand = autoencode_by_hand(x, demo)
    lib.close(z_hand, demo.encoder(x), "code z = f(x): by hand vs encoder")
    lib.close(x_hat_hand, demo(x), "reconstruction g(f(x)): by hand vs model")
    lib.check.shape(demo(x), tuple(x.shape), "reconstruction has the input's shape")
    flat_output = demo.logits(x).flatten(1)  # what a decoder without Unflatten would give: (8, 784)
    try:
        F.mse_loss(flat_output, x)
        raise AssertionError("comparing (8, 784) with (8, 1, 28, 28) should have failed")
    except RuntimeError as error:
        print("✓ mismatched shapes are refused:", str(error).split("\n")[0][:90])

# %% [markdown]
# ## 3 · Reconstruction losses
#
# Averaged over the $N$ images of a batch and the $D$ pixels of each:
#
# $$ \mathcal{L}_{\mathrm{MSE}} = \frac{1}{ND}\sum_{i=1}^{N}\sum_{j=1}^{D} (\hat x_{ij} - x_{ij})^2, \qquad
#    \mathcal{L}_{\mathrm{BCE}} = -\frac{1}{ND}\sum_{i,j} \Big[x_{ij}\log \hat x_{ij} + (1 - x_{ij})\log(1 - \hat x_{ij})\Big]. $$
#
# **Binary cross-entropy (二元交叉熵)** treats each pixel as the probability of "ink": it is the negative
# log-likelihood of a Bernoulli model, the loss the VAE chapter builds on. Two things to know:
#
# * Compute it from the **logits** $a$ (with $\hat x = \sigma(a)$), not from $\hat x$: since
#   $\log\sigma(a) = -\mathrm{softplus}(-a)$, the per-pixel loss is
#   $\max(a, 0) - x a + \log(1 + e^{-|a|})$, which never takes the log of 0.
# * Grey-level targets ($0 < x < 1$) make the minimum of BCE **not zero**: it is reached at $\hat x = x$ and
#   equals the pixels' **binary entropy** $H(x) = -x\log x - (1-x)\log(1-x)$. A BCE of 0.1 can be a perfect
#   reconstruction; compare models by MSE, or by BCE minus that floor.

# %%
with torch.no_grad():
    logits = demo.logits(x)
    x_hat = torch.sigmoid(logits)

mse_by_hand = ((x_hat - x) ** 2).sum() / x.numel()
bce_by_hand = -(x * torch.log(x_hat) + (1 - x) * torch.log(1 - x_hat)).sum() / x.numel()
bce_from_logits = (logits.clamp(min=0) - x * logits + torch.log1p(torch.exp(-logits.abs()))).mean()
lib.close(mse_by_hand, F.mse_loss(x_hat, x), "MSE by hand vs F.mse_loss")
lib.close(bce_by_hand, F.binary_cross_entropy(x_hat, x), "BCE by hand vs F.binary_cross_entropy", rtol=1e-5)
lib.close(bce_from_logits, F.binary_cross_entropy_with_logits(logits, x), "BCE from logits vs PyTorch")

# The floor: BCE at x_hat = x equals the mean binary entropy of the pixels (0 log 0 counts as 0).
p = x.clamp(1e-7, 1 - 1e-7)
entropy = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).mean()
lib.close(F.binary_cross_entropy(p, x), entropy, "BCE(x, x) = mean binary entropy H(x)", rtol=1e-4)
assert entropy > 0.05, "grey-level MNIST pixels should leave a clearly positive BCE floor"
# ... and it is the minimum: moving the prediction away from the target in either direction raises the loss.
for shift in (-0.05, 0.05):
    assert F.binary_cross_entropy((p + shift).clamp(1e-6, 1 - 1e-6), x) > F.binary_cross_entropy(p, x)
print(f"BCE floor of these 8 digits: {entropy:.4f} nats per pixel")

# %% [markdown]
# ## 4 · PCA, the linear baseline
#
# Centre the data ($\mu$ = mean image, $X_c = X - \mu$), take the covariance matrix and its eigenvectors
# (the **principal components (主成分)**), sorted by eigenvalue $\lambda_1 \ge \lambda_2 \ge \dots$:
#
# $$ \Sigma = \frac{1}{N} X_c^\top X_c = V \Lambda V^\top, \qquad
#    z = V_k^\top (x - \mu), \qquad \hat x = \mu + V_k z, \qquad
#    \frac{1}{ND}\sum_i \lVert x_i - \hat x_i \rVert^2 = \frac{1}{D}\sum_{j > k} \lambda_j . $$
#
# $V_k$ holds the first $k$ eigenvectors. The last identity says the training error of PCA is exactly the variance
# it throws away; by the Eckart–Young theorem no other rank-$k$ linear projection does better on the training data.
# We compute it by hand in float64 (on the CPU: Apple's MPS has no float64) and check it against scikit-learn and
# against the eigenvalues. Once $k$ is fixed PCA has nothing left to tune, so we can read its validation and test
# errors right away; they are the baselines for the networks below.

# %%
def pca_by_hand(X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, top-k eigenvectors (D, k) and all eigenvalues (descending) of the covariance of X (N, D)."""
    X = X.double()
    mu = X.mean(0)
    Xc = X - mu
    eigenvalues, eigenvectors = torch.linalg.eigh(Xc.T @ Xc / len(X))  # ascending order
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    return mu, eigenvectors[:, :k], eigenvalues


def pca_reconstruct(X: torch.Tensor, mu: torch.Tensor, Vk: torch.Tensor) -> torch.Tensor:
    """Project onto the principal subspace and map back: mu + Vk Vk^T (x - mu)."""
    return mu + (X.double() - mu) @ Vk @ Vk.T


mu, V_all, eigenvalues = pca_by_hand(X_train.cpu(), 128)  # 128 components for the curve of section 6
Vk = V_all[:, :K]
train_recon = pca_reconstruct(X_train.cpu(), mu, Vk)
pca = PCA(n_components=K, svd_solver="full").fit(X_train.cpu().numpy())
sk_recon = pca.inverse_transform(pca.transform(X_train.cpu().numpy()))
lib.close(train_recon, sk_recon, "PCA reconstruction: by hand vs scikit-learn", rtol=1e-4, atol=1e-4)
train_error = ((train_recon - X_train.cpu().double()) ** 2).mean()
lib.close(train_error, eigenvalues[K:].sum() / D, "PCA training MSE = discarded variance / D", rtol=1e-6)

def pca_mse(X: torch.Tensor, k: int = K) -> float:
    """Mean squared error of the k-component PCA reconstruction of the rows of X (fitted on the training digits)."""
    return ((pca_reconstruct(X.cpu(), mu, V_all[:, :k]).float() - X.cpu()) ** 2).mean().item()


pca_val_mse, pca_test_mse = pca_mse(X_val), pca_mse(X_test)
mean_image_mse = ((X_test.cpu() - mu.float()) ** 2).mean().item()
print(f"k={K}: PCA keeps {eigenvalues[:K].sum() / eigenvalues.sum():.1%} of the training variance; "
      f"validation MSE {pca_val_mse:.4f}, test MSE {pca_test_mse:.4f} (predicting the mean image: test MSE "
      f"{mean_image_mse:.4f})")

# %% [markdown]
# ## 5 · A linear autoencoder learns the PCA subspace
#
# Drop the nonlinearities: $z = W_e x + b_e$, $\hat x = W_d z + b_d$ with $W_e \in \mathbb{R}^{k\times D}$,
# $W_d \in \mathbb{R}^{D\times k}$, trained with MSE. Baldi and Hornik (1989) showed that every minimum of this
# loss is a global one and that there $W_d W_e$ is the projection onto the top-$k$ principal subspace: the
# columns of $W_d$ **span** the same space as $V_k$. They are *not* the principal components themselves: any
# invertible $k\times k$ mix $W_d A$, $A^{-1}W_e$ reconstructs equally well, so the network has no reason to
# pick orthogonal, variance-sorted axes.
#
# To compare two subspaces we use **principal angles (主角)**: orthonormalise the bases ($Q_A$, $Q_B$), then
#
# $$ \cos\theta_i = s_i\big(Q_A^\top Q_B\big),\qquad i = 1,\dots,k, $$
#
# the singular values of $Q_A^\top Q_B$. All angles 0 means the same subspace; 90° means orthogonal directions.

# %%
def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, largest first) between the column spaces of A (D, k) and B (D, m)."""
    QA, _ = torch.linalg.qr(A.double())
    QB, _ = torch.linalg.qr(B.double())
    cosines = torch.linalg.svdvals(QA.T @ QB).clamp(-1, 1)
    return torch.arccos(cosines).flip(0)


# Check on two real subspaces: PCA of the first 500 training digits vs PCA of all of them.
_, Vk_small, _ = pca_by_hand(X_train[:500].cpu(), K)
lib.close(principal_angles(Vk_small, Vk), subspace_angles(Vk_small.numpy(), Vk.numpy()),
          "principal angles by hand vs scipy.linalg.subspace_angles", atol=1e-6)
lib.close(principal_angles(Vk, Vk @ torch.randn(K, K, dtype=torch.float64)), torch.zeros(K),
          "a mixed basis of the same subspace has all angles 0", atol=1e-6)

# %% [markdown]
# Now train the linear autoencoder with the course's training loop. `lib.fit` is the one loop every chapter uses;
# it calls a **step function** once per batch. The step below serves every autoencoder in this chapter (and its
# pattern is the one the VAE and GAN chapters use too): optional corruption of the input, forward pass, loss
# against the *clean* input, backward pass, update, and a step of the learning-rate schedule. We use Adam with a
# **cosine schedule** that lowers the learning rate to zero by the end: the last, small steps average out the
# mini-batch noise, which matters when we want to compare the result with an exact solution.

# %%
class LinearAutoEncoder(nn.Module):
    """z = W_e x + b_e, x_hat = W_d z + b_d: no nonlinearity anywhere."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(D, k))
        self.decoder = nn.Sequential(nn.Linear(k, D), nn.Unflatten(1, (1, 28, 28)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def corrupt(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise x + sigma * eps (section 7 explains why we do not clip)."""
    if sigma == 0:
        return x
    eps = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    return x + sigma * eps


def reconstruction_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: str = "bce",
                        noise: float = 0.0, schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
                        generator: torch.Generator | None = None):
    """A step for `lib.fit`: reconstruct the (optionally corrupted) batch and learn from the clean one.

    loss="bce" trains on `model.logits` with binary cross-entropy; loss="mse" trains `model(x)` with MSE.
    The corruption noise comes from `generator`. Returns the training loss and the batch's reconstruction MSE.
    """

    def step(x: torch.Tensor, *labels: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        x_in = corrupt(x, noise, generator)
        if loss == "bce":
            logits = model.logits(x_in)
            value = F.binary_cross_entropy_with_logits(logits, x)
            x_hat = torch.sigmoid(logits)
        else:
            x_hat = model(x_in)
            value = F.mse_loss(x_hat, x)
        value.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        return {"loss": value.detach(), "train_mse": F.mse_loss(x_hat.detach(), x)}

    return step


def reconstruction_mse(model: nn.Module, x: torch.Tensor) -> float:
    """Mean squared reconstruction error of `model` on images `x` (eval mode, no gradients)."""
    return F.mse_loss(lib.predict(model, x), x).item()


def train_autoencoder(model: nn.Module, name: str, images: torch.Tensor, epochs: int, lr: float = 3e-3,
                      loss: str = "bce", noise: float = 0.0, live: bool = False, save: bool = True,
                      evaluate: Callable[[], dict[str, float]] | None = None) -> lib.History:
    """Adam with a cosine learning-rate schedule + `reconstruction_step` + `lib.fit`. After every epoch it
    records `evaluate()` (default: the validation MSE); with `save`, it keeps a checkpoint (run the cell again
    after an interruption and it resumes, noise stream included)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = lib.Batches(images, batch_size=S["batch_size"], seed=0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(batches))
    noise_rng = torch.Generator().manual_seed(0)
    step = reconstruction_step(model, optimizer, loss=loss, noise=noise, schedule=schedule, generator=noise_rng)
    checkpoint = lib.checkpoint_path("05_autoencoder", name, epochs=epochs, lr=lr, loss=loss, noise=noise,
                                     n=len(images), hidden=S["hidden"], batch_size=S["batch_size"])
    return lib.fit(step, batches, epochs,
                   evaluate=evaluate or (lambda: {"val_mse": reconstruction_mse(model, split.val_x)}),
                   checkpoint=checkpoint if save else None, live=live,
                   state={"model": model, "optimizer": optimizer, "schedule": schedule, "noise": noise_rng})


torch.manual_seed(0)
linear_ae = lib.prepare_model(LinearAutoEncoder(K), device)
linear_history = train_autoencoder(linear_ae, "linear", split.train_x, S["linear_epochs"], lr=S["linear_lr"], loss="mse")

# %% [markdown]
# The validation MSE after each epoch (the curve in `linear_history`) is how `linear_epochs` was chosen: it has to
# settle on PCA's validation error. The test digits are read once, below.

# %%
print(f"validation MSE: linear autoencoder {linear_history.last('val_mse'):.5f} vs PCA {pca_val_mse:.5f}")
linear_test_mse = reconstruction_mse(linear_ae, split.test_x)
W_d = linear_ae.decoder[0].weight.detach().cpu()  # (784, k): its columns span the learned subspace
angles = torch.rad2deg(principal_angles(W_d, Vk))
excess = (linear_test_mse - pca_test_mse) / pca_test_mse
column_cosines = F.normalize(W_d, dim=0).T @ F.normalize(W_d, dim=0) - torch.eye(K)
print(f"test MSE: linear autoencoder {linear_test_mse:.5f} vs PCA {pca_test_mse:.5f} ({excess:+.2%})")
print(f"principal angles to PCA's subspace (degrees): {np.round(angles.numpy(), 1)}")
print(f"largest |cosine| between two decoder columns: {column_cosines.abs().max():.2f} "
      "(PCA's components would give 0: same subspace, different axes)")
print(f"eigenvalues around the cut: λ{K} = {eigenvalues[K - 1]:.3f}, λ{K + 1} = {eigenvalues[K]:.3f}")
assert excess <= BAR["linear_excess"], f"linear AE error {excess:+.2%} above PCA's (bar {BAR['linear_excess']:.0%})"
assert angles.max() <= BAR["max_angle"], f"largest principal angle {angles.max():.1f}° > {BAR['max_angle']}°"

# %% [markdown]
# The largest angle is always the last to shrink. When $\lambda_{k}$ and $\lambda_{k+1}$ are close, turning the
# 16th direction towards the 17th barely changes the loss, so the gradient that corrects it is tiny: training
# needs many steps (try `linear_epochs` 10 times smaller and watch the largest angle grow while the validation
# error hardly moves). The reconstruction error, which is what the network actually optimises, converges much sooner
# than the subspace. The eigenvalues depend on the sample: the 1,000 training digits of the quick profile put
# $\lambda_{16}$ and $\lambda_{17}$ closer together than the 3,500 of the standard profile, so the quick profile
# trains the linear model for more steps with a smaller learning rate (`linear_lr`); with the standard profile's
# larger one its largest angle stays far above the bar.

# %% [markdown]
# The learned decoder columns, drawn as images next to the first principal components: the same subspace, but
# mixed axes. The autoencoder found *what* to keep, not PCA's particular coordinates.

# %%
fig, axes = plt.subplots(2, 8, figsize=(10, 2.8))
for i in range(8):
    for row, (vectors, label) in enumerate([(Vk.float(), "PCA component"), (W_d, "decoder column")]):
        image = vectors[:, i].reshape(28, 28)
        limit = image.abs().max()
        axes[row, i].imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[row, i].set_title(f"{label} {i + 1}", fontsize=7)
        axes[row, i].axis("off")
fig.suptitle("Same 16-dimensional subspace, different axes")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · Build and train: a nonlinear autoencoder beats PCA
#
# Put the ReLUs back and train with BCE (the Bernoulli loss from section 3). Same bottleneck, $k = 16$; the only
# difference from the linear model is the nonlinearity, and the two hidden layers it makes useful. The live curve is
# the validation MSE after each epoch; `epochs` was chosen from it (the check below confirms that the last epoch is
# as good as the best one on validation). Then, once, the error on the test digits, which neither PCA nor the
# network nor any of our choices saw.

# %%
torch.manual_seed(0)
ae = lib.prepare_model(AutoEncoder(K, S["hidden"]), device)
print(f"autoencoder parameters: {sum(p.numel() for p in ae.parameters()):,}")
history = train_autoencoder(ae, "ae16", split.train_x, S["epochs"], live=True)
best_epoch = int(np.argmin(history["val_mse"])) + 1
print(f"validation MSE: last epoch {history.last('val_mse'):.4f}, best {min(history['val_mse']):.4f} "
      f"(epoch {best_epoch} of {S['epochs']}); PCA {pca_val_mse:.4f}")
assert history.last("val_mse") <= 1.01 * min(history["val_mse"]), "validation error rose at the end: fewer epochs"

ae_test_mse = reconstruction_mse(ae, split.test_x)
ratio = ae_test_mse / pca_test_mse
print(f"test MSE with a {K}-number code: autoencoder {ae_test_mse:.4f}, PCA {pca_test_mse:.4f} (ratio {ratio:.2f})")
assert ratio <= BAR["ae_vs_pca"], f"autoencoder/PCA error ratio {ratio:.2f} above the bar {BAR['ae_vs_pca']}"
assert ae_test_mse < 0.5 * mean_image_mse, "the autoencoder should do far better than the mean image"

# %% [markdown]
# Top row: validation digits. Then PCA's and the autoencoder's reconstructions from 16 numbers each. PCA's are
# blurry sums of "ghost" components; the autoencoder's are sharper because its decoder can bend the 16 numbers into
# strokes.

# %%
shown = split.val_x[:10]
pca_shown = pca_reconstruct(shown.flatten(1).cpu(), mu, Vk).float().reshape(-1, 1, 28, 28)
rows = torch.cat([shown.cpu(), pca_shown, lib.predict(ae, shown).cpu()])
titles = [f"digit {int(c)}" for c in split.val_y[:10]] + ["PCA"] * 10 + ["autoencoder"] * 10
lib.image_grid(rows.clamp(0, 1), titles, columns=10)
plt.show()

# %% [markdown]
# How many principal components would PCA need to match the autoencoder? That is a choice of $k$, so we make it on
# validation: the curve is PCA's validation error for every $k$ (cheap: one eigendecomposition), the star our
# 16-number autoencoder. Then we read the test error of the chosen PCA once, to see whether the match holds on
# new digits.

# %%
ks = list(range(1, 129))
pca_curve = [pca_mse(X_val, k) for k in ks]
lib.close(pca_curve[K - 1], pca_val_mse, "curve at k=16 equals the PCA validation MSE above", rtol=1e-6)
ae_val_mse = history.last("val_mse")
k_needed = next(k for k, e in zip(ks, pca_curve, strict=True) if e <= ae_val_mse)
pca_matched_test_mse = pca_mse(X_test, k_needed)
print(f"on validation PCA needs k = {k_needed} to match the autoencoder; on test: PCA(k={k_needed}) "
      f"{pca_matched_test_mse:.4f} vs autoencoder {ae_test_mse:.4f}")
assert k_needed > K, "the autoencoder's 16 numbers should be worth more than 16 principal components"
lib.close(pca_matched_test_mse, ae_test_mse, "the match chosen on validation holds on test (within 10%)", rtol=0.1)
fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
ax.plot(ks, pca_curve, label="PCA, k components")
ax.plot([K], [ae_val_mse], "*", ms=14, color="tab:red", label=f"autoencoder, k={K}")
ax.axhline(ae_val_mse, color="tab:red", lw=0.6, ls="--")
ax.set(xlabel="code size k", ylabel="validation reconstruction MSE", yscale="log",
       title=f"PCA needs k = {k_needed} to match the autoencoder's k = {K}")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# ## 7 · Look inside
#
# ### A 2-D latent map
#
# With a code of only two numbers we can *draw* the latent space. Each dot is a validation digit placed at its code
# and coloured by its label, which the autoencoder never saw. PCA's first two components on the left for comparison.
# To put a number on "separates digits better", we classify each validation digit by its 10 nearest training codes.
# (This section only looks, it chooses nothing and reports no headline number, so it stays on validation digits.)

# %%
torch.manual_seed(0)
ae2 = lib.prepare_model(AutoEncoder(2, S["hidden"]), device)
map_history = train_autoencoder(ae2, "ae2", split.train_x, S["map_epochs"])
codes_train = lib.predict(ae2.encoder, split.train_x).cpu()
codes_val = lib.predict(ae2.encoder, split.val_x).cpu()
pca2_train = ((X_train.cpu().double() - mu) @ Vk[:, :2]).float()
pca2_val = ((X_val.cpu().double() - mu) @ Vk[:, :2]).float()
y_train, y_val = split.train_y.cpu().numpy(), split.val_y.cpu().numpy()


def knn_accuracy(train_codes: torch.Tensor, val_codes: torch.Tensor) -> float:
    """Validation accuracy of a 10-nearest-neighbour digit classifier in a code space."""
    return KNeighborsClassifier(10).fit(train_codes.numpy(), y_train).score(val_codes.numpy(), y_val)


knn = {"PCA, 2 components": knn_accuracy(pca2_train, pca2_val),
       "autoencoder, 2-D code": knn_accuracy(codes_train, codes_val)}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
for ax, (name, points) in zip(axes, [("PCA, 2 components", pca2_val), ("autoencoder, 2-D code", codes_val)],
                              strict=True):
    scatter = ax.scatter(points[:, 0], points[:, 1], c=y_val, cmap="tab10", s=8, vmin=-0.5, vmax=9.5)
    ax.set(title=f"{name}\n10-nearest-neighbour digit accuracy {knn[name]:.0%}", xlabel="code 1", ylabel="code 2")
fig.colorbar(scatter, ax=axes, ticks=range(10), label="digit")
plt.show()
print({name: round(acc, 3) for name, acc in knn.items()}, "2-D validation MSE:", round(map_history.last("val_mse"), 4))
assert knn["autoencoder, 2-D code"] > knn["PCA, 2 components"], "the 2-D AE map should separate digits better"

# %% [markdown]
# ### A denoising autoencoder
#
# A **denoising autoencoder** (Vincent et al., 2008) is trained on corrupted inputs $\tilde x$ but scored against
# the clean $x$:
#
# $$ \tilde x = x + \sigma\,\varepsilon,\quad \varepsilon \sim \mathcal{N}(0, I), \qquad
#    \mathcal{L}_{\mathrm{DAE}} = \mathbb{E}_{x}\,\mathbb{E}_{\varepsilon}\big[\ell\big(g(f(\tilde x)),\, x\big)\big]. $$
#
# It cannot just copy its input (the input is wrong), so it must learn what digits look like and push a noisy
# image back towards them. We do not clip $\tilde x$ to $[0, 1]$: clipping would make the noise depend on the pixel
# (a black pixel could only get brighter), and the formula above would no longer describe it. First check that
# `corrupt` implements that formula exactly: what it adds is $\sigma\varepsilon$ with $\varepsilon$ drawn from the
# generator it is given (so a checkpoint that saves the generator resumes the same noise stream), on ink and
# background alike, and fresh noise on every call (every mini-batch must see new corruption, or the network just
# learns to undo one fixed pattern).

# %%
batch = split.train_x[:500]
noisy = corrupt(batch, 0.5, torch.Generator().manual_seed(1))
eps = torch.randn(batch.shape, generator=torch.Generator().manual_seed(1)).to(device)
# float32 rounding of x + 0.5 eps (|values| < 4) is below 1e-6; a missing or wrong term moves pixels by ~0.1-1
lib.close(noisy, batch + 0.5 * eps, "corrupt(x, 0.5) = x + 0.5 ε, ε from the given generator", rtol=0, atol=1e-6)
assert noisy.min() < -0.5 and noisy.max() > 1.5, "noisy pixels must leave [0, 1]: the noise is not clipped"
stream = torch.Generator().manual_seed(1)
first_call, second_call = corrupt(batch, 0.5, stream), corrupt(batch, 0.5, stream)
assert not torch.equal(first_call, second_call), "each call must draw fresh noise from the generator's stream"
assert torch.equal(corrupt(x, 0.0), x), "sigma = 0 must return the input unchanged"

# %%
TRAIN_NOISE = 0.5
torch.manual_seed(0)
dae = lib.prepare_model(AutoEncoder(K, S["hidden"]), device)
dae_history = train_autoencoder(dae, "dae16", split.train_x, S["dae_epochs"], noise=TRAIN_NOISE)

# %% [markdown]
# Slide the noise level. The rows: clean validation digits, the noisy input, what the plain autoencoder of section
# 6 makes of it, and what the denoising autoencoder makes of it. The title gives each row's MSE against the clean
# digits, over the whole validation set.

# %%
# The same noise for every slider value; the test digits get their own, for the one test measurement below.
val_eps = torch.randn(split.val_x.shape, generator=torch.Generator().manual_seed(123)).to(device)
test_eps = torch.randn(split.test_x.shape, generator=torch.Generator().manual_seed(124)).to(device)


def denoising_errors(sigma: float, clean: torch.Tensor = split.val_x, eps: torch.Tensor = val_eps) -> dict[str, float]:
    """MSE against the clean digits: of the noisy input, of the plain AE's and of the DAE's output."""
    noisy = clean + sigma * eps
    return {"noisy input": F.mse_loss(noisy, clean).item(),
            "plain AE": F.mse_loss(lib.predict(ae, noisy), clean).item(),
            "denoising AE": F.mse_loss(lib.predict(dae, noisy), clean).item()}


def draw_denoising(sigma: float) -> plt.Figure:
    noisy = split.val_x[:8] + sigma * val_eps[:8]
    rows = [("clean", split.val_x[:8]), ("noisy input", noisy), ("plain AE", lib.predict(ae, noisy)),
            ("denoising AE", lib.predict(dae, noisy))]
    errors = denoising_errors(sigma)
    fig, axes = plt.subplots(4, 8, figsize=(9, 5))
    for r, (name, images) in enumerate(rows):
        for c in range(8):
            axes[r, c].imshow(images[c, 0].cpu().clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(name + (f"  (MSE {errors[name]:.4f})" if name in errors else ""), fontsize=9, loc="left")
    fig.suptitle(f"noise σ = {sigma:.2f}")
    fig.tight_layout()
    return fig


noise_widget = lib.widgets.Explorer(draw_denoising, sigma=lib.widgets.slider(0.3, 0.0, 1.0, 0.05, "noise σ"))
noise_widget

# %% [markdown]
# The widget is code, so we test it, on a fresh copy (the one above may have been moved): move the slider to a
# heavy noise level and check that the figure follows and that the denoising autoencoder really cleans better than
# the plain one. Then the test digits, once, at the training noise level.

# %%
widget_check = lib.widgets.Explorer(draw_denoising, sigma=lib.widgets.slider(0.3, 0.0, 1.0, 0.05, "noise σ"))
widget_check.controls["sigma"].value = 0.6
assert widget_check.values == {"sigma": 0.6} and widget_check.figure.get_suptitle() == "noise σ = 0.60"
errors_06 = denoising_errors(0.6)
assert f"denoising AE  (MSE {errors_06['denoising AE']:.4f})" == widget_check.figure.axes[24].get_title(loc="left")
assert errors_06["denoising AE"] < errors_06["plain AE"] < errors_06["noisy input"], errors_06
widget_check.controls["sigma"].value = 0.0
assert widget_check.figure.get_suptitle() == "noise σ = 0.00" and widget_check.redraws == 3
dae_test_mse = denoising_errors(TRAIN_NOISE, split.test_x, test_eps)["denoising AE"]
print("validation, σ = 0.6:", {k: round(v, 4) for k, v in errors_06.items()},
      f"| test, DAE at σ = {TRAIN_NOISE}: {dae_test_mse:.4f}")

# %% [markdown]
# ## 8 · Applications in industry
#
# * **Anomaly detection (异常检测):** fraud in card transactions, faults in machine sensor data (predictive
#   maintenance), defects on a production line, intrusions in network traffic. Anomalies are rare and varied, so
#   there are too few labelled examples to train a classifier; an autoencoder needs only normal data. Demonstrated
#   below.
# * **Denoising and restoration:** cleaning scanned documents, low-dose medical images, audio.
# * **Compression and embeddings:** the code is a compact feature vector for search, clustering and visualisation;
#   learned image codecs use (variational) autoencoders; the image generators of chapter 06 onwards and latent
#   diffusion models work in an autoencoder's latent space rather than on raw pixels.
# * **Pre-training (预训练):** masked autoencoders (reconstruct hidden patches of an image) and BERT-style masked
#   language models (reconstruct hidden words) are denoising autoencoders at large-model scale.
# * **Recommendation:** denoising autoencoders over a user's item history fill in the items they are likely to want.
#
# ### Anomaly detection by reconstruction error
#
# Pretend that only the digits 0–4 are "normal products". Train an autoencoder on those training digits only,
# then score every digit by its reconstruction error: a 5–9 is an anomaly the model has never seen.
#
# A single number summarises how well the score separates the two groups, the **ROC AUC**: the probability that a
# random anomaly scores higher than a random normal example (ties count half),
#
# $$ \mathrm{AUC} = \frac{1}{n_+ n_-}\sum_{i \in \text{anomalies}}\;\sum_{j \in \text{normal}}
#    \Big(\mathbb{1}[s_i > s_j] + \tfrac12\,\mathbb{1}[s_i = s_j]\Big). $$
#
# 1 is perfect, 0.5 is guessing. The same number is the area under the ROC curve (true-positive rate against
# false-positive rate as the threshold moves), which is how scikit-learn computes it; we check one against the other.

# %%
def auc_by_pairs(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """ROC AUC as the share of (anomaly, normal) pairs ranked the right way round; ties count half."""
    positive, negative = scores[is_anomaly], scores[~is_anomaly]
    greater = (positive[:, None] > negative[None, :]).sum().item()
    ties = (positive[:, None] == negative[None, :]).sum().item()
    return (greater + 0.5 * ties) / (len(positive) * len(negative))


def anomaly_score(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-image reconstruction MSE: the anomaly score."""
    return ((lib.predict(model, images) - images) ** 2).flatten(1).mean(1).cpu()


lib.close(auc_by_pairs(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([False, True, False, True])), 0.875,
          "AUC with a tie, worked by hand: (1 + 1 + 1 + 0.5) / 4", rtol=0, atol=1e-12)
NORMAL = torch.tensor([0, 1, 2, 3, 4], device=device)
normal_train = split.train_x[torch.isin(split.train_y, NORMAL)]
val_is_anomaly = ~torch.isin(split.val_y, NORMAL).cpu()
is_anomaly = ~torch.isin(split.test_y, NORMAL).cpu()
print(f"normal training digits: {len(normal_train):,}; validation: {int((~val_is_anomaly).sum())} normal, "
      f"{int(val_is_anomaly.sum())} anomalies; test: {int((~is_anomaly).sum())} normal, {int(is_anomaly.sum())} anomalies")

# %% [markdown]
# How big should the detector's code be? It must rebuild normal digits well, but not *everything* well: a code
# that is too generous rebuilds a 7 almost as well as a 1 (exercise 4). That is a choice made by looking at
# results, so we make it on the validation digits, built the same way as the test task (0–4 normal, 5–9 anomalies):
# one detector per code size in `detector_codes`, each with its validation AUC after every epoch, and we keep the
# size with the best final validation AUC. The curves also show whether `anomaly_epochs` is long enough.

# %%
detectors, detector_histories = {}, {}
for code in S["detector_codes"]:
    torch.manual_seed(0)
    candidate = lib.prepare_model(AutoEncoder(code, S["hidden"]), device)
    detector_histories[code] = train_autoencoder(
        candidate, f"anomaly{code}", normal_train, S["anomaly_epochs"],
        evaluate=lambda m=candidate: {"val_auc": auc_by_pairs(anomaly_score(m, split.val_x), val_is_anomaly)})
    detectors[code] = candidate
val_aucs = {code: h.last("val_auc") for code, h in detector_histories.items()}
code_size = max(val_aucs, key=val_aucs.get)
detector = detectors[code_size]

fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
for code, h in detector_histories.items():
    ax.plot(h["epoch"], h["val_auc"], label=f"code of {code}" + ("  (chosen)" if code == code_size else ""))
ax.set(xlabel="epoch", ylabel="validation ROC AUC", title="choosing the detector on validation digits")
ax.grid(alpha=0.3)
ax.legend()
plt.show()
print("final validation AUC by code size:", {c: round(v, 3) for c, v in val_aucs.items()}, "→ code", code_size)
best_auc = max(detector_histories[code_size]["val_auc"])
assert val_aucs[code_size] >= best_auc - 0.01, f"validation AUC peaked at {best_auc:.3f} earlier: fewer epochs"

# %% [markdown]
# The choice is made; now the test digits, once.

# %%
scores = anomaly_score(detector, split.test_x)
anomaly_auc = auc_by_pairs(scores, is_anomaly)
lib.close(anomaly_auc, roc_auc_score(is_anomaly.numpy(), scores.numpy()), "AUC by pairs vs sklearn roc_auc_score",
          rtol=0, atol=1e-9)
print(f"test ROC AUC, digits 5-9 as anomalies, code of {code_size}: {anomaly_auc:.3f} "
      f"(validation {val_aucs[code_size]:.3f}; bar {BAR['anomaly_auc']})")
assert anomaly_auc >= BAR["anomaly_auc"], f"anomaly AUC {anomaly_auc:.3f} below the bar {BAR['anomaly_auc']}"

# %% [markdown]
# Unseen digit classes are a hard test: a 7 is not far from a 1, and a thin 5 may still be rebuilt from the
# pieces of 3s. A *damaged* product is usually easier. Here the "defect" is a scratch: a bright stroke drawn
# across a normal test digit at a random height. The detector never saw scratches.

# %%
def scratch(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Copy of `images` with one horizontal stroke (2 px thick, 16 px long) at a random row in each."""
    generator = torch.Generator().manual_seed(seed)
    damaged = images.clone()
    rows = torch.randint(6, 21, (len(images),), generator=generator).tolist()
    starts = torch.randint(2, 10, (len(images),), generator=generator).tolist()
    for i, (r, c) in enumerate(zip(rows, starts, strict=True)):
        damaged[i, 0, r : r + 2, c : c + 16] = 1.0
    return damaged


normal_test = split.test_x[torch.isin(split.test_y, NORMAL)]
scratched = scratch(normal_test)
scratch_scores = torch.cat([anomaly_score(detector, normal_test), anomaly_score(detector, scratched)])
scratch_labels = torch.cat([torch.zeros(len(normal_test), dtype=torch.bool), torch.ones(len(scratched), dtype=torch.bool)])
corrupted_auc = auc_by_pairs(scratch_scores, scratch_labels)
print(f"ROC AUC, scratched 0-4 digits as anomalies: {corrupted_auc:.3f}")
assert corrupted_auc >= BAR["anomaly_auc"], f"scratched digits: AUC {corrupted_auc:.3f} below {BAR['anomaly_auc']}"

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, labels, values in [("digits 5-9", is_anomaly, scores), ("scratched digits", scratch_labels, scratch_scores)]:
    fpr, tpr, _ = roc_curve(labels.numpy(), values.numpy())
    left.plot(fpr, tpr, label=f"{name}: AUC {auc_by_pairs(values, labels):.3f}")
left.plot([0, 1], [0, 1], "k:", label="guessing")
left.set(xlabel="false-positive rate (normal flagged)", ylabel="true-positive rate (anomalies caught)",
         title="ROC curves of the reconstruction-error detector")
left.legend()
per_digit = [scores[split.test_y.cpu() == d].mean().item() for d in range(10)]
right.bar(range(10), per_digit, color=["tab:blue"] * 5 + ["tab:red"] * 5)
right.set(xticks=range(10), xlabel="test digit (blue: trained on, red: never seen)",
          ylabel="mean reconstruction MSE", title="Anomaly score by digit")
fig.tight_layout()
plt.show()

# %% [markdown]
# In production you do not report an AUC, you pick a **threshold**: flag everything whose error is above the
# $q$-quantile of the errors of *normal* digits, which promises false alarms on a share $1 - q$ of normal inputs.
# Which normal digits? Held-out ones: the validation 0–4s, which the detector never trained on. The widget sets the
# threshold from them and shows what it does on the test digits, which played no part in it: a higher threshold
# means fewer false alarms and more missed anomalies.

# %%
val_normal_scores = anomaly_score(detector, split.val_x[~val_is_anomaly.to(device)])
train_scores = anomaly_score(detector, normal_train)


def flag_rates(quantile: float, calibration: torch.Tensor = val_normal_scores) -> tuple[float, float, float]:
    """(threshold at the `quantile` of the calibration scores, share of test anomalies flagged, share of normal
    test digits flagged)."""
    threshold = torch.quantile(calibration, quantile).item()
    caught = (scores[is_anomaly] > threshold).float().mean().item()
    false_alarms = (scores[~is_anomaly] > threshold).float().mean().item()
    return threshold, caught, false_alarms


def draw_threshold(quantile: float) -> plt.Figure:
    threshold, caught, false_alarms = flag_rates(quantile)
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    bins = np.linspace(0, scores.quantile(0.99).item(), 60)
    ax.hist(scores[~is_anomaly].numpy(), bins, alpha=0.6, label="normal (0-4)")
    ax.hist(scores[is_anomaly].numpy(), bins, alpha=0.6, label="unseen (5-9)", color="tab:red")
    ax.axvline(threshold, color="k", ls="--", label="threshold (from validation)")
    ax.set(xlabel="reconstruction MSE", ylabel="test digits",
           title=f"q={quantile:.2f}: catches {caught:.0%} of anomalies, {false_alarms:.0%} false alarms")
    ax.legend()
    return fig


threshold_widget = lib.widgets.Explorer(draw_threshold,
                                        quantile=lib.widgets.slider(0.9, 0.5, 0.99, 0.01, "threshold quantile"))
threshold_widget

# %% [markdown]
# Does the promise hold? On a fresh copy of the widget, set $q = 0.9$: the threshold promises 10% false alarms, and
# the test's normal digits should show that, up to sampling noise. The noise has two sources, the quantile estimated
# from $n_v$ validation digits and the rate counted on $n_t$ test digits, so the standard error is about
# $\sqrt{q(1-q)\,(1/n_v + 1/n_t)}$ and we allow three of them. Then the same with the threshold taken from the
# *training* errors instead.

# %%
Q = 0.9
widget_check = lib.widgets.Explorer(draw_threshold,
                                    quantile=lib.widgets.slider(0.5, 0.5, 0.99, 0.01, "threshold quantile"))
widget_check.controls["quantile"].value = Q
threshold, caught, false_alarms = flag_rates(Q)
title = widget_check.figure.axes[0].get_title()
assert title == f"q={Q:.2f}: catches {caught:.0%} of anomalies, {false_alarms:.0%} false alarms", title
n_val, n_test = len(val_normal_scores), int((~is_anomaly).sum())
allowed = 3 * math.sqrt(Q * (1 - Q) * (1 / n_val + 1 / n_test))
_, train_caught, train_false_alarms = flag_rates(Q, train_scores)
print(f"threshold at the {Q:.0%} quantile of validation 0-4s: {false_alarms:.1%} false alarms on test "
      f"(promised {1 - Q:.0%} ± {allowed:.1%}), catches {caught:.0%} of the 5-9s")
print(f"threshold at the {Q:.0%} quantile of training 0-4s: {train_false_alarms:.1%} false alarms, "
      f"catches {train_caught:.0%}")
assert abs(false_alarms - (1 - Q)) <= allowed, "the validation threshold should keep its false-alarm promise"
assert train_false_alarms > 1 - Q + allowed, "a threshold from training errors should break the same promise"

# %% [markdown]
# **A common pitfall:** calibrating the threshold on the *training* errors. The autoencoder reconstructs the
# digits it was trained on better than new ones, so a quantile of training errors sits too low and raises more false
# alarms on new normal data than it promises (the last line above; the gap is larger with less training data or a
# bigger model). Calibrate on held-out normal examples that the model never trained on.

# %% [markdown]
# ## 9 · Challenges and limits
#
# ### Memorisation vs generalisation (记忆与泛化)
#
# A low *training* error proves nothing: a big enough autoencoder can memorise its training set. Train the same
# architecture on only 64 digits for many steps, and compare its training and validation error with the model of
# section 6.
# A memorising autoencoder reconstructs a new digit as a blend of the training digits it stored.

# %%
few = split.train_x[:64]
torch.manual_seed(0)
memoriser = lib.prepare_model(AutoEncoder(K, S["hidden"]), device)
# 30 epochs over the 64 digits repeated 10 times: 300 steps that all see the same 64 images.
memo_history = train_autoencoder(memoriser, "memoriser", few.repeat(10, 1, 1, 1), 30, save=False)
gaps = {"64 digits": (reconstruction_mse(memoriser, few), reconstruction_mse(memoriser, split.val_x)),
        f"{len(split.train_x):,} digits": (reconstruction_mse(ae, split.train_x), reconstruction_mse(ae, split.val_x))}
for name, (train_error, held_out) in gaps.items():
    print(f"trained on {name:>12}: training MSE {train_error:.4f}, validation MSE {held_out:.4f}, "
          f"ratio {held_out / train_error:.1f}")
(memo_train, memo_val), (full_train, full_val) = gaps.values()
assert memo_val / memo_train > 2 * full_val / full_train, "the 64-digit model should generalise far worse"

nearest = torch.cdist(split.val_x[:8].flatten(1), few.flatten(1)).argmin(1)
rows = torch.cat([split.val_x[:8], lib.predict(memoriser, split.val_x[:8]), few[nearest]]).cpu()
lib.image_grid(rows, ["new digit"] * 8 + ["memoriser"] * 8 + ["closest of the 64"] * 8, columns=8)
plt.show()

# %% [markdown]
# The opposite failure is a model so flexible that it generalises to *everything*: an overcomplete autoencoder
# ($k \ge D$) can learn the identity and reconstruct a photograph as well as a digit, which makes its
# reconstruction error useless as an anomaly score. The bottleneck (or noise, or a sparsity penalty) is what
# forces an autoencoder to learn the data rather than the copy operation.
#
# ### You cannot sample from a plain autoencoder
#
# The decoder turns any code into an image, so why not generate new digits by decoding random codes? Because
# nothing tells us *where* the codes live. The 2-D map above has dense clusters, gaps and long arms, on scales the
# training chose freely. Draw codes uniformly from the box that holds the training codes and measure how far each
# lands from the nearest real code, compared with how far the validation digits' codes land.

# %%
low_corner, high_corner = codes_train.quantile(0.01, dim=0), codes_train.quantile(0.99, dim=0)
random_codes = low_corner + (high_corner - low_corner) * torch.rand(2000, 2, generator=torch.Generator().manual_seed(0))
reference = codes_train[torch.randperm(len(codes_train), generator=torch.Generator().manual_seed(0))[:4000]]
val_distance = torch.cdist(codes_val, reference).min(1).values
random_distance = torch.cdist(random_codes, reference).min(1).values
far = (random_distance > val_distance.quantile(0.95)).float().mean().item()
print(f"{far:.0%} of random codes are farther from every training code than 95% of real validation digits are")
assert far > 0.2, "a good share of the latent box should be empty"

grid = 12
a = torch.linspace(low_corner[0].item(), high_corner[0].item(), grid)
b = torch.linspace(high_corner[1].item(), low_corner[1].item(), grid)
grid_codes = torch.cartesian_prod(b, a).flip(1)  # rows top to bottom, columns left to right
decoded = lib.predict(ae2.decoder, grid_codes.to(device)).sigmoid().cpu()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [1, 1]})
left.scatter(codes_train[:, 0], codes_train[:, 1], c=y_train, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
empty = random_distance > val_distance.quantile(0.95)
left.scatter(random_codes[empty, 0], random_codes[empty, 1], marker="x", s=8, color="k", label="random code in a gap")
left.set(xlim=(low_corner[0], high_corner[0]), ylim=(low_corner[1], high_corner[1]), xlabel="code 1",
         ylabel="code 2", title="training codes and the gaps between them")
left.legend(loc="upper right")
right.imshow(decoded[:, 0].reshape(grid, grid, 28, 28).permute(0, 2, 1, 3).reshape(grid * 28, grid * 28), cmap="gray")
right.set(title="decoding a regular grid over the same box", xticks=[], yticks=[])
fig.tight_layout()
plt.show()

# %% [markdown]
# Where training codes are dense the decoder draws clean digits. Between the clusters and out at the edges it draws
# blends of two digits, doubled strokes and distorted shapes, and in a 16-dimensional code space, where we cannot
# look, almost all of the volume is such a gap. The plain autoencoder was never asked to make *every* code
# meaningful, only the codes of training images, and nothing tells us which distribution to draw codes from. The fix is to
# make the codes follow a known distribution (say, a standard normal) and to train the decoder on codes *sampled*
# around each image: that is the **variational autoencoder (变分自编码器, VAE)** of chapter 06. A common pitfall is to
# call an autoencoder with a squashed (e.g. tanh) bottleneck a "VAE": without sampling and without the KL term that
# pulls codes towards the prior, it is still a plain autoencoder, with the same gaps.
#
# Other limits worth knowing:
# * **Blurry reconstructions:** MSE and BCE average over plausible outputs, so uncertain strokes come out grey.
# * **Reconstruction error is not semantics:** a digit with more ink has a larger error even when it is normal
#   (compare the thin 1s with the 2s in the bar chart above), and a detector can miss anomalies that are easy to
#   rebuild.
# * **No guarantee of a useful code:** the code is whatever helps reconstruction; it need not separate the
#   classes you care about (compare the 2-D map's clusters with its 10-NN accuracy).
#
# ## 10 · Exercises
#
# **Exercise 1: stable BCE from logits.** Write `my_bce_with_logits(a, x)`: the mean binary cross-entropy of
# targets `x` in [0, 1] given logits `a`, without ever taking the log of 0. The test compares it with PyTorch,
# including logits of ±200, some of them confidently wrong (a logit of 200 for a black pixel costs 200 nats).

# %%
def test_bce_with_logits(fn) -> None:
    a = torch.tensor([[-200.0, -3.0, 0.0, 0.5, 200.0], [1.0, -1.0, 10.0, -10.0, 0.0], [200.0, -200.0, 30.0, -30.0, 5.0]])
    x = torch.tensor([[0.0, 0.2, 0.5, 1.0, 1.0], [0.3, 0.7, 0.0, 1.0, 0.9], [0.0, 1.0, 0.5, 0.5, 0.2]])
    out = fn(a, x)
    assert torch.isfinite(out), "your BCE is not finite for large logits: use the max(a, 0) - x a + log(1 + e^-|a|) form"
    lib.close(out, F.binary_cross_entropy_with_logits(a, x), "BCE with logits", quiet=True)


def my_bce_with_logits(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_bce_with_logits(my_bce_with_logits), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_bce_with_logits(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (a.clamp(min=0) - x * a + torch.log1p(torch.exp(-a.abs()))).mean()


lib.self_check(lambda: test_bce_with_logits(solution_bce_with_logits), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_bce_with_logits(
    lambda a, x: -(x * torch.log(torch.sigmoid(a)) + (1 - x) * torch.log(1 - torch.sigmoid(a))).mean()),
    "the textbook formula through the sigmoid (log of 0 for large logits)")
lib.check.must_reject(lambda: test_bce_with_logits(
    lambda a, x: F.binary_cross_entropy(torch.sigmoid(a).clamp(1e-7, 1 - 1e-7), x)),
    "a sigmoid clamped away from 0 and 1 (finite, but wrong for confidently wrong logits)")
lib.check.must_reject(lambda: test_bce_with_logits(
    lambda a, x: (a.clamp(min=0) - x * a + torch.log1p(torch.exp(-a.abs()))).sum()), "the sum instead of the mean")

# %% [markdown]
# **Exercise 2: PCA by the SVD.** The principal components are also the right singular vectors of the centred
# data: $X_c = U S V^\top$. Write `pca_svd(X, k)` returning the reconstructions $\mu + X_c V_k V_k^\top$ of the
# rows of `X` (N, D). The test compares with scikit-learn on 300 training digits.

# %%
def test_pca_svd(fn) -> None:
    X = X_train[:300].cpu().double()
    expected = PCA(n_components=10, svd_solver="full").fit(X.numpy())
    lib.close(fn(X, 10), expected.inverse_transform(expected.transform(X.numpy())), "PCA via SVD", atol=1e-8, quiet=True)


def pca_svd(X: torch.Tensor, k: int) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_pca_svd(pca_svd), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_pca_svd(X: torch.Tensor, k: int) -> torch.Tensor:
    mu = X.mean(0)
    _, _, Vh = torch.linalg.svd(X - mu, full_matrices=False)
    Vk = Vh[:k].T
    return mu + (X - mu) @ Vk @ Vk.T


lib.self_check(lambda: test_pca_svd(solution_pca_svd), "Exercise 2 (solution)", strict=True)


def pca_svd_uncentred(X: torch.Tensor, k: int) -> torch.Tensor:
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return X @ Vh[:k].T @ Vh[:k]


def pca_svd_last_rows(X: torch.Tensor, k: int) -> torch.Tensor:
    mu = X.mean(0)
    _, _, Vh = torch.linalg.svd(X - mu, full_matrices=False)
    Vk = Vh[-k:].T  # as if the SVD sorted ascending like torch.linalg.eigh; it sorts descending
    return mu + (X - mu) @ Vk @ Vk.T


lib.check.must_reject(lambda: test_pca_svd(pca_svd_uncentred), "an SVD of the uncentred data")
lib.check.must_reject(lambda: test_pca_svd(pca_svd_last_rows), "the last k rows of Vh (the smallest components)")

# %% [markdown]
# **Exercise 3: AUC from ranks.** The pairwise AUC above costs $n_+ n_-$ comparisons. With ranks it costs a sort:
# rank all scores together (tied scores get the average of their ranks, `scipy.stats.rankdata` does this), then
# $\mathrm{AUC} = \big(R_+ - n_+(n_+ + 1)/2\big) / (n_+ n_-)$, where $R_+$ is the sum of the anomalies' ranks (the
# Mann–Whitney U statistic, normalised). Write `auc_by_ranks(scores, is_anomaly)` with NumPy arrays in and a float
# out. The test uses the detector's real scores on the validation digits, plus a case with ties.

# %%
val_scores = anomaly_score(detector, split.val_x)


def test_auc_by_ranks(fn) -> None:
    lib.close(fn(val_scores.numpy(), val_is_anomaly.numpy()),
              roc_auc_score(val_is_anomaly.numpy(), val_scores.numpy()), "AUC by ranks", quiet=True)
    tied = np.array([0.1, 0.4, 0.4, 0.9, 0.2, 0.6])  # one anomaly and one normal score tie at 0.4
    labels = np.array([False, True, False, True, False, True])
    lib.close(fn(tied, labels), roc_auc_score(labels, tied), "AUC by ranks with ties", quiet=True)


def auc_by_ranks(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_auc_by_ranks(auc_by_ranks), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_auc_by_ranks(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = is_anomaly.sum(), (~is_anomaly).sum()
    return float((ranks[is_anomaly].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


lib.self_check(lambda: test_auc_by_ranks(solution_auc_by_ranks), "Exercise 3 (solution)", strict=True)


def auc_ordinal_ranks(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    ranks = scores.argsort().argsort() + 1.0  # ties broken by position instead of averaged
    n_pos, n_neg = is_anomaly.sum(), (~is_anomaly).sum()
    return float((ranks[is_anomaly].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_rank_sum_only(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos, n_neg = is_anomaly.sum(), (~is_anomaly).sum()
    return float(rankdata(scores)[is_anomaly].sum() / (n_pos * n_neg))  # forgets to subtract n+(n+ + 1)/2


lib.check.must_reject(lambda: test_auc_by_ranks(auc_ordinal_ranks), "ordinal ranks (ties not averaged)")
lib.check.must_reject(lambda: test_auc_by_ranks(auc_rank_sum_only), "the rank sum without the n+(n+ + 1)/2 term")

# %% [markdown]
# **Exercise 4 (think, then try).** Add 2 and 64 to `detector_codes` in the settings and run section 8 again.
# Which way does the validation AUC move at each end, and why can a *better* autoencoder make a *worse* anomaly
# detector? (Hint: what happens to the reconstruction of a 7 when the model can rebuild almost anything?)

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
The detector is good when the reconstruction error is **small for normal digits and large for unseen ones**. The AUC
measures that *gap*, not how well the model reconstructs, so neither extreme makes the best detector, for opposite
reasons (how much AUC each end loses varies from run to run; compare your two numbers with the ones below).

* **A code of 64** makes a better autoencoder: it has room for the strokes of almost any digit, and a 7 or a 9 is
  made of strokes it has seen in 1s and 4s. The errors of the unseen digits shrink along with those of the normal
  ones, the two distributions overlap more, and the AUC tends to drop. Pushed to the limit ($k \\ge D$) it could
  learn the identity and every error would be near zero: a perfect autoencoder and a useless detector.
* **A code of 2** rebuilds even the normal digits badly (the 2-D map of section 7 has a validation MSE of
  {map_history.last("val_mse"):.3f}, against {history.last("val_mse"):.3f} for 16 numbers). The error then mostly says how much
  ink a digit has and how far it is from the few shapes the code can hold, which separates 0–4 from 5–9 only
  roughly.
* In between, the code holds what normal digits share and little else. That is why the chapter picks the size by
  the **validation AUC** (here {", ".join(f"{c}: {v:.3f}" for c, v in val_aucs.items())}) and not by
  reconstruction error, which would always prefer the biggest code; and why it uses validation digits, not test
  digits, to pick it.
""")

# %% [markdown]
# **Exercise 5 (think).** The linear autoencoder found PCA's subspace but not its axes. What extra constraint on
# $W_e$ and $W_d$ would make it find orthogonal axes? (Tied weights $W_d = W_e^\top$ are a start; what else is
# needed for the variance ordering?)

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer("""
The loss only sees the product $W_d W_e$, so any invertible $A$ gives the same loss: $W_d A$, $A^{-1} W_e$.

* **Tied, orthonormal weights** ($W_d = W_e^\\top$ with $W_e W_e^\\top = I$) remove the stretching and skewing:
  at the optimum the columns of $W_d$ are an orthonormal basis of the principal subspace, so the axes *are*
  orthogonal. But $A$ can still be any rotation $Q$ ($Q^\\top Q = I$): $W_d Q$ is just as good, so the axes are not
  yet the principal components.
* **To pin down the axes and their order,** break the rotation symmetry so that the loss cares which unit carries
  what. Three standard ways:
  1. *Nested (ordered) reconstruction:* add the losses of reconstructing from the first 1, 2, ..., $k$ code units,
     $\\sum_{m=1}^{k} \\lVert x - W_d^{(m)} W_e^{(m)} x \\rVert^2$ with $W_e^{(m)}$ the first $m$ rows of $W_e$ and
     $W_d^{(m)}$ the first $m$ columns of $W_d$ (*nested dropout*, Rippel et al. 2014, samples one $m$ per step).
     Unit 1 alone must then be the best 1-D code, the top component; unit 2 the best addition to it, and so on.
     Sanger's generalised Hebbian rule reaches the same ordered components one unit at a time.
  2. *Decorrelated codes:* require the code covariance $W_e \\Sigma W_e^\\top$ to be diagonal. With orthonormal rows
     that makes each row an eigenvector of $\\Sigma$ (when the eigenvalues are distinct); sorting the units by code
     variance gives PCA's order.
  3. *Unequal weight penalties:* an L2 penalty $\\sum_i \\lambda_i \\lVert w_i \\rVert^2$ with distinct
     $\\lambda_1 < \\lambda_2 < \\dots$ (Bao et al., 2020) gives the least-penalised unit the largest-variance direction.
* Without such a constraint the principal angles go to 0 (the subspace is right) while the largest cosine between
  decoder columns stays away from 0 (the axes are mixed): exactly what section 5 measured.
""")

# %% [markdown]
# ## 11 · Summary and FAQ
#
# * An autoencoder is an encoder $z = f(x)$ and a decoder $\hat x = g(z)$ trained to reconstruct $x$; the
#   bottleneck forces it to learn structure. The decoder's output must have the input's shape.
# * MSE and BCE are the two reconstruction losses; compute BCE from logits; with grey-level targets its floor is the
#   pixels' entropy, not zero.
# * PCA is the best linear rank-$k$ reconstruction; a linear autoencoder learns the same subspace (we measured the
#   principal angles) with arbitrary axes. A nonlinear autoencoder with the same 16 numbers has a clearly lower
#   held-out error.
# * Denoising autoencoders learn to undo corruption; the reconstruction error of an autoencoder trained on normal
#   data is an anomaly score, evaluated with the ROC AUC.
# * Autoencoders can memorise, and their latent space has gaps: decoding random codes does not give new data.
#   The VAE (chapter 06) turns the autoencoder into a generative model.
#
# **FAQ.** *Why BCE for training but MSE for comparison?* BCE gives stronger gradients for nearly black or white
# pixels and matches a Bernoulli pixel model; MSE is what PCA minimises, so comparing by MSE is fair to PCA.
# *Why does the linear autoencoder need bias terms?* PCA centres the data; the biases let the network learn the
# mean image. *Why not a convolutional autoencoder?* It does better on images and is a good extension (swap the
# `nn.Linear` stacks for `nn.Conv2d` and `nn.ConvTranspose2d`); the MLP keeps the PCA comparison transparent.
# *My anomaly AUC differs from the reference.* It depends on which digits are "normal" and on the random seed by a
# few hundredths; the bar leaves room for that.

# %%
lib.save_results("05_autoencoder", {
    "ae_test_mse": ae_test_mse,
    "pca_test_mse": pca_test_mse,
    "anomaly_auc": anomaly_auc,
    "corrupted_auc": corrupted_auc,
    "linear_ae_test_mse": linear_test_mse,
    "linear_max_angle_deg": angles.max().item(),
    "dae_test_mse": dae_test_mse,
})
