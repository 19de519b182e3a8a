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
# # 03 · Convolutional neural networks
#
# A **convolutional neural network (卷积神经网络, CNN)** is the model family that made computers see: it read
# cheques in the 1990s, won ImageNet in 2012, and still sits inside face unlock, factory inspection cameras,
# medical-image readers and the vision encoders of today's multimodal large models. This chapter writes its two
# operations, **convolution** and **pooling**, by hand, checks them against PyTorch, applies filters to a real
# photo, trains a CNN on handwritten digits, looks inside it, and then measures where CNNs struggle.
#
# **Goals**
# 1. Explain local connectivity, weight sharing, channels, padding, stride, receptive field and pooling, and why
#    they suit images.
# 2. Write the multi-channel 2-D convolution sum (with stride and padding), max and average pooling, the
#    output-size, receptive-field, parameter-count and FLOP formulas, and check each one against PyTorch.
# 3. See classic filters (edges, blur, sharpen) act on a real photo, and edit a kernel yourself.
# 4. Avoid the most common CNN bug: a wrong flatten size.
# 5. Understand batch normalisation, including why it behaves differently in training and evaluation.
# 6. Train a CNN on real digits, choosing settings on validation digits, to at least 97% test accuracy (standard
#    profile; 99.2% on full MNIST).
# 7. Look inside: learned filters, feature maps, confident mistakes, confusion matrix.
# 8. Measure the limits: data hunger, adversarial examples (FGSM), rotations and large shifts, compute per image.
#
# **Time:** quick ≈ 20 s · standard ≈ 1 min on an idle 2-core laptop · full (GPU, full MNIST) ≈ 3 min.

# %%
import copy
import itertools
import math
import time
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import scipy.signal
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lib

device = lib.setup(seed=0)

# %% [markdown]
# Everything that changes with the profile (`COURSE_PROFILE`) is in the next cell. `channels` are the widths of
# the two convolution blocks; `hunger_*` control the data-hunger experiment; `strips` is the number of
# five-digit numbers the document reader reads. These settings (and the learning rate and augmentation strength in
# section 5) were chosen by watching accuracy on the *validation* digits, never the test digits.

# %%
SETTINGS = {
    "quick": dict(epochs=3, channels=(16, 32), batch_size=64, hunger_sizes=[100, 300, 1000], hunger_steps=80,
                  strips=50),
    "standard": dict(epochs=10, channels=(16, 32), batch_size=64, hunger_sizes=[100, 250, 500, 1000, 2000, 3500],
                     hunger_steps=200, strips=100),
    "full": dict(epochs=15, channels=(32, 64), batch_size=128,
                 hunger_sizes=[100, 300, 1000, 3000, 10000, 30000, 55000], hunger_steps=1500, strips=1000),
}
BARS = {"quick": 0.80, "standard": 0.97, "full": 0.992}  # minimum test accuracy of the CNN
EPSILON = 0.1  # strength of the FGSM attack, in pixel units (pixels are in [0, 1])
S = lib.pick(SETTINGS)
print(lib.get_profile(), S, "bar:", lib.pick(BARS))

# %% [markdown]
# ## 1 · Concepts
#
# An image is a grid of numbers: a 28×28 digit is 784 numbers, a 640×427 colour photo is 3 **channels (通道)**
# (red, green, blue) of 273,280 numbers each. Chapter 02 fed the 784 pixels of a digit to a multilayer
# perceptron, which connects every pixel to every hidden unit and knows nothing about which pixels are
# neighbours. A CNN builds three facts about images into its structure:
#
# * **Local connectivity (局部连接).** Nearby pixels belong together (a stroke, an edge, a texture). Each output
#   of a convolution looks only at a small window of the input, e.g. 3×3 or 5×5 pixels.
# * **Weight sharing (权值共享).** A pattern means the same thing wherever it appears, so the same small set
#   of weights, the **kernel** or **filter (卷积核 / 滤波器)**, is slid over every position. Sliding it over the
#   image and taking a weighted sum at each position is the **convolution (卷积)**; the grid of results is a
#   **feature map (特征图)**. A layer has many kernels, one per output channel, and each kernel spans all input
#   channels.
# * **Hierarchy.** Stacking layers lets later layers combine earlier patterns: edges → strokes → digit parts →
#   digits. The input region that can influence one output is its **receptive field (感受野)**; it grows with
#   depth.
#
# Three settings shape a convolution: the kernel size $K$, the **padding (填充)** $P$ (zeros added around the
# border so the kernel can sit on edge pixels) and the **stride (步幅)** $S$ (how far the kernel jumps between
# positions; $S=2$ halves the resolution). **Pooling (池化)** summarises each small window by its maximum
# (**max pooling, 最大池化**) or mean (**average pooling, 平均池化**): it shrinks feature maps, saves compute
# and makes the output less sensitive to small shifts. A CNN for classification ends with a **flatten (展平)**
# and **fully connected layers (全连接层)** that turn the final feature maps into class scores.
#
# Weight sharing is what makes CNNs affordable. Map a 224×224 RGB photo to 64 feature maps of the same size:

# %%
H = W = 224
dense_params = (3 * H * W) * (64 * H * W) + 64 * H * W  # every input pixel to every output pixel, plus biases
conv_params_5x5 = 64 * 3 * 5 * 5 + 64  # 64 kernels of 3×5×5 weights, plus biases
print(f"fully connected: {dense_params:,} parameters ({dense_params * 4 / 1e12:.1f} TB in float32)")
print(f"5×5 convolution: {conv_params_5x5:,} parameters")

# %% [markdown]
# The data of this chapter: real handwritten digits (MNIST, via `lib`) and a real photo that ships with
# scikit-learn (the Summer Palace in Beijing). The digits come in three splits, as in chapter 02: the network
# learns from **train**; everything we choose by looking at results (epochs, learning rate, widths, augmentation,
# the document reader's rules) is judged on **validation**; **test** is read once, after training, for the numbers
# we report. Each number below says which split it comes from.

# %%
split = lib.load_digits().to(device)
print(split)
photo = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32).permute(2, 0, 1) / 255  # (3, H, W)
gray = (0.299 * photo[0] + 0.587 * photo[1] + 0.114 * photo[2])  # luminance, (H, W)
print(f"photo: {tuple(photo.shape)} RGB in [0, 1]; gray version {tuple(gray.shape)}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1.6, 2]})
axes[0].imshow(photo.permute(1, 2, 0))
axes[0].set_title("china.jpg (scikit-learn sample)")
digits_row = split.train_x[:8, 0].cpu().permute(1, 0, 2).reshape(28, -1)
axes[1].imshow(digits_row, cmap="gray")
axes[1].set_title("training digits: " + " ".join(str(int(c)) for c in split.train_y[:8]))
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2 · Equations, each checked against PyTorch
#
# ### 2.1 The 2-D convolution sum
#
# Input $X$ of shape $(N, C_{in}, H, W)$, kernels $W$ of shape $(C_{out}, C_{in}, K_h, K_w)$, bias
# $b \in \mathbb{R}^{C_{out}}$, stride $S$, padding $P$. Let $\tilde X$ be $X$ with $P$ zeros added on every
# side. Then output channel $o$ at position $(i, j)$ of image $n$ is
#
# $$ Y[n, o, i, j] \;=\; b_o \;+\; \sum_{c=0}^{C_{in}-1}\;\sum_{u=0}^{K_h-1}\;\sum_{v=0}^{K_w-1}
#    W[o, c, u, v]\;\tilde X[n,\, c,\; S i + u,\; S j + v]. $$
#
# Every output channel sums over **all** input channels, each with its own $K_h\times K_w$ slice of the
# kernel. Below, the sum is written as literally as possible (a Python loop over $i, j, c, u, v$; the batch
# and output channels are handled as whole tensors) and compared with `F.conv2d` on two RGB crops of the photo.

# %%
def conv2d_loops(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                 padding: int = 0) -> torch.Tensor:
    """2-D convolution (PyTorch's convention) straight from the sum: loops over i, j, c, u, v."""
    n, c_in, h, w = x.shape
    c_out, c_in_w, kh, kw = weight.shape
    assert c_in == c_in_w, f"input has {c_in} channels but the kernel expects {c_in_w}"
    xp = F.pad(x, (padding, padding, padding, padding))  # zeros on all four sides
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    y = bias.view(1, c_out, 1, 1).repeat(n, 1, h_out, w_out)
    for i, j in itertools.product(range(h_out), range(w_out)):
        for c, u, v in itertools.product(range(c_in), range(kh), range(kw)):
            # (n, 1) pixel values times (1, c_out) weights: one term of the sum for every image and output channel
            y[:, :, i, j] += xp[:, c, stride * i + u, stride * j + v, None] * weight[None, :, c, u, v]
    return y


crops = torch.stack([photo[:, 150:161, 200:214], photo[:, 300:311, 420:434]])  # (2, 3, 11, 14): pagoda, trees
torch.manual_seed(0)
for kernel, stride, padding in [(3, 1, 0), (3, 2, 1), (5, 2, 2), (2, 3, 1)]:
    layer = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding)
    with torch.no_grad():
        ours = conv2d_loops(crops, layer.weight, layer.bias, stride, padding)
        lib.close(ours, F.conv2d(crops, layer.weight, layer.bias, stride=stride, padding=padding),
                  f"loop convolution, K={kernel} S={stride} P={padding}, 3→4 channels", rtol=1e-5, atol=1e-6)

# %% [markdown]
# ### 2.2 The same sum as one matrix product (im2col)
#
# Loops are clear but slow. Libraries copy every $C_{in}\times K_h\times K_w$ input window into a column
# ("im2col", `F.unfold`), which turns the whole convolution into one matrix product of the
# $(C_{out},\, C_{in}K_hK_w)$ kernel matrix with the $(C_{in}K_hK_w,\; H_{out}W_{out})$ column matrix; fast
# matrix-multiply code (BLAS, cuDNN) does the rest.

# %%
def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                  padding: int = 0) -> torch.Tensor:
    """2-D convolution as (kernel matrix) @ (unfolded input windows)."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (n, c_in*kh*kw, h_out*w_out)
    y = weight.view(c_out, -1) @ columns + bias.view(1, c_out, 1)
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    return y.view(n, c_out, h_out, w_out)


digits = split.train_x[:64].cpu()
layer = nn.Conv2d(1, 8, 5, stride=1, padding=2)
with torch.no_grad():
    lib.close(conv2d_im2col(digits, layer.weight, layer.bias, 1, 2), layer(digits), "im2col convolution on 64 digits",
              atol=1e-5)
    rgb_layer = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    lib.close(conv2d_im2col(crops, rgb_layer.weight, rgb_layer.bias, 2, 1), rgb_layer(crops),
              "im2col convolution on the RGB crops, stride 2", atol=1e-5)

    timings = {}
    for name, fn in [("loops", conv2d_loops), ("im2col", conv2d_im2col),
                     ("F.conv2d", lambda x, w, b, s, p: F.conv2d(x, w, b, stride=s, padding=p))]:
        started = time.perf_counter()
        fn(digits[:1, :, 7:21, 7:21], layer.weight, layer.bias, 1, 2)
        timings[name] = time.perf_counter() - started
print("time for the centre 14×14 of one digit, 1→8 channels, 5×5:", {k: f"{v * 1000:.2f} ms" for k, v in timings.items()})

# %% [markdown]
# ### 2.3 Convolution or cross-correlation?
#
# Strictly, the sum above is a **cross-correlation (互相关)**: the kernel is not flipped. The convolution of
# signal processing flips it, $(X * K)[i,j] = \sum_{u,v} X[i-u,\, j-v]\,K[u,v]$. Deep learning keeps the name
# "convolution" because the kernel is learned: a network that needed a flipped kernel would simply learn the
# flipped one. The two agree once you flip the kernel, which we check against SciPy's textbook convolution on the
# gray photo.

# %%
patch = gray[100:164, 150:214]  # 64×64 pixels of the pagoda roof
kernel = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [-2.0, 0.5, 1.0]])  # deliberately not symmetric
textbook = torch.tensor(scipy.signal.convolve2d(patch.numpy(), kernel.numpy(), mode="valid"))
pytorch = F.conv2d(patch[None, None], kernel.flip(0, 1)[None, None])[0, 0]
lib.close(pytorch, textbook, "F.conv2d with a flipped kernel vs scipy.signal.convolve2d", atol=1e-5)
unflipped = F.conv2d(patch[None, None], kernel[None, None])[0, 0]
assert not torch.allclose(unflipped, textbook, atol=1e-3), "without the flip the two operations differ"

# %% [markdown]
# ### 2.4 Output size
#
# Along each spatial axis, with input size $H$, kernel $K$, padding $P$, stride $S$ (and **dilation (空洞)**
# $D$, which spreads the kernel taps $D$ pixels apart, so the kernel covers $D(K-1)+1$ pixels):
#
# $$ H_{out} = \left\lfloor \frac{H + 2P - D(K-1) - 1}{S} \right\rfloor + 1 . $$
#
# The floor means a stride that does not divide evenly simply drops the last partial window. With $S=1$ and odd
# $K$, the padding $P = D(K-1)/2$ keeps the size unchanged ("same" padding). We check the formula against
# PyTorch over a grid of about 1,800 settings. Tensors on the `meta` device have shapes but no data, so PyTorch
# computes output shapes without computing anything else.

# %%
def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def torch_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """What F.conv2d actually produces (on the meta device: shapes only)."""
    x = torch.empty(1, 1, size, size, device="meta")
    w = torch.empty(1, 1, kernel, kernel, device="meta")
    return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1]


checked = 0
for size, k, s, p, d in itertools.product((5, 7, 8, 28, 31, 32, 224), (1, 2, 3, 4, 5, 7), (1, 2, 3, 4),
                                          (0, 1, 2, 3), (1, 2, 3)):
    if d * (k - 1) + 1 > size + 2 * p:
        continue  # the kernel does not fit: PyTorch raises an error, there is no output
    assert conv_output_size(size, k, s, p, d) == torch_output_size(size, k, s, p, d), (size, k, s, p, d)
    checked += 1
for size, k, d in itertools.product((7, 28, 32), (1, 3, 5, 7), (1, 2)):
    assert conv_output_size(size, k, 1, d * (k - 1) // 2, d) == size  # "same" padding keeps the size
print(f"✓ output-size formula matches F.conv2d for {checked:,} settings")

# %% [markdown]
# ### 2.5 Receptive field
#
# Let layer $l$ have kernel $K_l$, stride $S_l$ and dilation $D_l$. One step on layer $l$'s output moves
# $J_l = \prod_{m\le l} S_m$ input pixels (the **jump**), and the receptive field grows by $(K_l-1)D_l$ of the
# previous layer's steps:
#
# $$ R_0 = 1,\qquad R_l = R_{l-1} + (K_l - 1)\,D_l\,J_{l-1},\qquad J_0 = 1,\; J_l = J_{l-1} S_l . $$
#
# Pooling counts as a layer too ($K=S=2$ for 2×2 pooling). To *measure* a receptive field, take the gradient of
# one output with respect to the input: it is non-zero exactly on the pixels that output depends on. We use
# all-ones kernels and average pooling so that no gradients cancel by accident.

# %%
def receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """Receptive field (in input pixels) of a stack of (kernel, stride, dilation) layers."""
    field, jump = 1, 1
    for kernel, stride, dilation in layers:
        field += (kernel - 1) * dilation * jump
        jump *= stride
    return field


def measured_receptive_field(layers: list[tuple[int, int, int]], image: torch.Tensor) -> int:
    """Height of the input region whose pixels change the centre output (found with autograd)."""
    x = image[None, None].clone().requires_grad_(True)
    h = x
    for kernel, stride, dilation in layers:
        h = F.conv2d(h, torch.ones(1, 1, kernel, kernel) / kernel**2, stride=stride, dilation=dilation)
    (grad,) = torch.autograd.grad(h[0, 0, h.shape[2] // 2, h.shape[3] // 2], x)
    rows = torch.nonzero(grad[0, 0].abs().sum(1)).flatten()
    return int(rows.max() - rows.min() + 1)


stacks = {
    "this chapter's CNN: conv5, pool2, conv3, pool2": [(5, 1, 1), (2, 2, 1), (3, 1, 1), (2, 2, 1)],
    "VGG style: conv3, conv3, pool2, conv3, conv3, pool2": [(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1), (3, 1, 1),
                                                           (2, 2, 1)],
    "three stride-2 conv3": [(3, 2, 1)] * 3,
    "dilated conv3 with D = 1, 2, 4": [(3, 1, 1), (3, 1, 2), (3, 1, 4)],
}
for name, layers in stacks.items():
    formula, measured = receptive_field(layers), measured_receptive_field(layers, gray[:64, :64])
    assert formula == measured, f"{name}: formula {formula}, measured {measured}"
    print(f"✓ {name}: receptive field {formula}×{formula} pixels (formula = autograd)")

# %% [markdown]
# ### 2.6 Max and average pooling
#
# With window $K$, stride $S$ and padding $P$ (pooling acts on each channel separately):
#
# $$ Y_{\max}[n,c,i,j] = \max_{0\le u,v<K} \tilde X[n,c,\,Si+u,\,Sj+v],\qquad
#    Y_{\text{avg}}[n,c,i,j] = \frac{1}{K^2}\sum_{0\le u,v<K} \tilde X[n,c,\,Si+u,\,Sj+v]. $$
#
# The padding value matters: max pooling pads with $-\infty$ (a padded cell never wins), average pooling pads with
# zeros and by default still divides by $K^2$ (`count_include_pad=True`); with `count_include_pad=False` it
# divides by the number of real pixels in the window. `Tensor.unfold(dim, K, S)` cuts the windows for us.

# %%
def windows(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """All kernel×kernel windows of the last two axes: shape (N, C, H_out, W_out, kernel, kernel)."""
    return x.unfold(2, kernel, stride).unfold(3, kernel, stride)


def max_pool(x: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    """Max pooling by hand: pad with -inf, take the largest value of each window."""
    padded = F.pad(x, (padding,) * 4, value=-math.inf)
    return windows(padded, kernel, stride).amax(dim=(-2, -1))


def avg_pool(x: torch.Tensor, kernel: int, stride: int, padding: int = 0, count_include_pad: bool = True):
    """Average pooling by hand: pad with zeros, sum each window, divide by K² or by the real-pixel count."""
    total = windows(F.pad(x, (padding,) * 4), kernel, stride).sum(dim=(-2, -1))
    if count_include_pad:
        return total / kernel**2
    real = windows(F.pad(torch.ones_like(x), (padding,) * 4), kernel, stride).sum(dim=(-2, -1))
    return total / real


feature_maps = torch.relu(layer(digits[:16])).detach()  # real feature maps: 16 digits × 8 channels × 28×28
for kernel, stride, padding in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (4, 3, 2)]:
    lib.close(max_pool(feature_maps, kernel, stride, padding), F.max_pool2d(feature_maps, kernel, stride, padding),
              f"max pooling K={kernel} S={stride} P={padding}", quiet=True)
    lib.close(avg_pool(feature_maps, kernel, stride, padding), F.avg_pool2d(feature_maps, kernel, stride, padding),
              f"average pooling K={kernel} S={stride} P={padding}", atol=1e-6, quiet=True)
    lib.close(avg_pool(feature_maps, kernel, stride, padding, count_include_pad=False),
              F.avg_pool2d(feature_maps, kernel, stride, padding, count_include_pad=False),
              f"average pooling without padded cells K={kernel} S={stride} P={padding}", atol=1e-6, quiet=True)
    assert max_pool(feature_maps, kernel, stride, padding).shape[-1] == conv_output_size(28, kernel, stride, padding)
print("✓ max and average pooling (4 settings, both padding conventions) match F.max_pool2d / F.avg_pool2d; "
      "their output sizes follow the same formula as convolution")

# %% [markdown]
# ### 2.7 Parameter count
#
# A convolution with $G$ **groups** splits the channels into $G$ independent groups ($G = C_{in}$ is a
# *depthwise* convolution, used by MobileNet); a batch-normalisation layer (section 5.1) learns a scale and a shift
# per channel:
#
# $$ \#\text{conv} = C_{out}\cdot\frac{C_{in}}{G}\cdot K_h K_w + C_{out}\,[\text{bias}],\qquad
#    \#\text{linear} = d_{out}\, d_{in} + d_{out},\qquad \#\text{batchnorm} = 2C . $$
#
# The image size does not appear: that is weight sharing.

# %%
def conv_param_count(c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = True) -> int:
    """Learnable parameters of nn.Conv2d(c_in, c_out, kernel, groups=groups, bias=bias)."""
    return c_out * (c_in // groups) * kernel * kernel + (c_out if bias else 0)


def count(module: nn.Module) -> int:
    """Learnable parameters of a module, as PyTorch stores them."""
    return sum(p.numel() for p in module.parameters())


for c_in, c_out, k, groups, bias in [(1, 16, 5, 1, True), (16, 32, 3, 1, True), (3, 64, 7, 1, False),
                                     (32, 32, 3, 32, True), (32, 64, 1, 1, True), (64, 128, 3, 4, True)]:
    conv = nn.Conv2d(c_in, c_out, k, groups=groups, bias=bias)
    assert conv_param_count(c_in, c_out, k, groups, bias) == count(conv), (c_in, c_out, k, groups, bias)
assert count(nn.Linear(1568, 128)) == 1568 * 128 + 128 and count(nn.BatchNorm2d(32)) == 2 * 32
print("✓ parameter-count formulas match nn.Conv2d (6 settings, incl. groups and no bias), nn.Linear, nn.BatchNorm2d")

# %% [markdown]
# ### 2.8 Translation equivariance
#
# Because the same kernel is used everywhere, shifting the input shifts the feature map by the same amount:
# convolution is **translation equivariant (平移等变)**, $\mathrm{conv}(\mathrm{shift}(x)) =
# \mathrm{shift}(\mathrm{conv}(x))$ (exactly, as long as nothing is pushed over the border; we pad the digits
# first). Max pooling with stride 2 keeps this only for shifts by a multiple of 2: it is *approximately*
# **invariant (不变)** to small shifts, not exactly.

# %%
def shift(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Move image content down and right by whole pixels (zeros come in at the top and left)."""
    return F.pad(x, (right, -right, down, -down))  # negative padding crops the other side


framed = F.pad(digits[:16], (8, 8, 8, 8))  # 44×44, so shifted content stays inside the frame
edge_layer = nn.Conv2d(1, 4, 5, padding=2, bias=False)
with torch.no_grad():
    lib.close(edge_layer(shift(framed, 3, 2)), shift(edge_layer(framed), 3, 2),
              "conv(shift(x)) = shift(conv(x))", atol=1e-6)
    pooled = F.max_pool2d(edge_layer(framed), 2)
    lib.close(F.max_pool2d(edge_layer(shift(framed, 2, 4)), 2), shift(pooled, 1, 2),
              "max pooling after a shift by (2, 4) = the pooled map shifted by (1, 2)", atol=1e-6)
    odd = F.max_pool2d(edge_layer(shift(framed, 1, 1)), 2)
    assert not torch.allclose(odd, pooled, atol=1e-3) and not torch.allclose(odd, shift(pooled, 1, 1), atol=1e-3)
print("✓ a shift by one pixel is not a shift of the pooled map: pooling is only approximately shift-invariant")
print("The loops give the same numbers hundreds of times more slowly: the sum is the idea, im2col and cuDNN are the "
      "engineering.")

# %% [markdown]
# ## 3 · Classic filters on a real photo
#
# Before networks learned their kernels, image processing designed them by hand. Each one below is a 3×3 or 5×5
# kernel applied with the convolution of section 2 (padding $K/2$, so the output has the photo's size):
#
# * **blur** (box or Gaussian): average the neighbourhood, which removes fine detail and noise;
# * **edge detectors**: Sobel kernels respond to horizontal or vertical intensity changes, the Laplacian to
#   changes in any direction; their weights sum to zero, so flat regions give zero;
# * **sharpen** = identity − Laplacian: add back the local detail that blurring removes.
#
# The first layer of a trained CNN learns kernels much like these (section 6).

# %%
def kernel_tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


binomial = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
KERNELS = {
    "identity": kernel_tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "box blur": torch.ones(3, 3) / 9,
    "Gaussian blur 5×5": torch.outer(binomial, binomial) / 256,
    "sharpen": kernel_tensor([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "Sobel x (vertical edges)": kernel_tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "Sobel y (horizontal edges)": kernel_tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "Laplacian (all edges)": kernel_tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "emboss": kernel_tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
}


def apply_kernel(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter a 2-D image with an odd-sized square kernel; zero padding keeps the size."""
    size = kernel.shape[-1]
    if kernel.dim() != 2 or kernel.shape[0] != size or size % 2 == 0:
        raise ValueError(f"need an odd-sized square kernel, got shape {tuple(kernel.shape)}")
    return F.conv2d(image[None, None], kernel[None, None], padding=size // 2)[0, 0]


def total_variation(image: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: large for sharp, detailed images."""
    return ((image[1:] - image[:-1]).abs().mean() + (image[:, 1:] - image[:, :-1]).abs().mean()).item()


filtered = {name: apply_kernel(gray, k) for name, k in KERNELS.items()}
lib.close(filtered["identity"], gray, "identity kernel leaves the photo unchanged")
lib.close(filtered["sharpen"], gray - filtered["Laplacian (all edges)"], "sharpen = photo − Laplacian(photo)",
          atol=1e-5)
for name in ("Sobel x (vertical edges)", "Sobel y (horizontal edges)", "Laplacian (all edges)"):
    assert KERNELS[name].sum() == 0, f"{name} should give zero on flat regions"
assert total_variation(filtered["Gaussian blur 5×5"]) < total_variation(filtered["box blur"]) < total_variation(gray)
assert total_variation(filtered["sharpen"]) > total_variation(gray)

fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for ax, (name, image) in zip(axes.flat, filtered.items(), strict=True):
    crop = image[40:240, 110:360]  # zoom on the pagoda so that blur and sharpening are visible
    if abs(KERNELS[name].sum().item()) < 1e-6:  # edge detectors: show the strength of the response
        ax.imshow(crop.abs(), cmap="gray", vmax=crop.abs().quantile(0.99).item())
        name += ", |response|"
    else:
        ax.imshow(crop, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
fig.suptitle("one photo (zoomed on the pagoda), eight hand-designed kernels")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Widget: pick or write a kernel
#
# Choose a kernel, or choose `custom` and type your own as rows separated by `;` (any odd size: 3×3, 5×5, ...).
# Try `0 0 0; 0 0 1; 0 0 0`: since the kernel is not flipped, it moves the picture one pixel to the *left*.
# The right panel zooms into the pagoda roof so you can see the pixels.

# %%
def parse_kernel(text: str) -> torch.Tensor:
    """'a b c; d e f; g h i' (commas also accepted) → a square tensor; ValueError if it is not square and odd."""
    rows = [row.replace(",", " ").split() for row in text.strip().split(";") if row.strip()]
    try:
        kernel = torch.tensor([[float(v) for v in row] for row in rows])
    except ValueError as error:  # a non-number, or rows of different lengths
        raise ValueError(f"could not read {text!r} as rows of numbers separated by ';'") from error
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"the kernel must be square with an odd size, got {len(rows)} rows {tuple(kernel.shape)}")
    return kernel


def draw_filter(kernel: str, custom: str) -> plt.Figure:
    try:
        weights = parse_kernel(custom) if kernel == "custom" else KERNELS[kernel]
        message = ""
    except ValueError as error:
        weights, message = KERNELS["identity"], f" [{error}; showing identity]"
    output = apply_kernel(gray, weights)
    edges = abs(weights.sum().item()) < 1e-6  # zero-sum kernel: show the strength of the response
    shown = output.abs() if edges else output
    scale = dict(vmin=0, vmax=shown.quantile(0.99).item()) if edges else dict(vmin=0, vmax=1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1, 1.5, 1.5]})
    limit = weights.abs().max().item() or 1.0
    axes[0].imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (i, j), value in zip(itertools.product(range(len(weights)), repeat=2), weights.flatten().tolist(), strict=True):
        axes[0].text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8,
                     color="white" if abs(value) > 0.6 * limit else "black")
    axes[0].set_title(f"kernel: {kernel}{message}", fontsize=9)
    axes[1].imshow(shown, cmap="gray", **scale)
    axes[1].set_title(f"{'|response|' if edges else 'filtered photo'}: detail (TV) {total_variation(output):.3f}, "
                      f"photo {total_variation(gray):.3f}", fontsize=9)
    axes[2].imshow(shown[40:120, 160:260], cmap="gray", **scale)
    axes[2].set_title("zoom: top of the pagoda", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


kernel_lab = lib.widgets.Explorer(
    draw_filter,
    kernel=widgets.Dropdown(options=[*KERNELS, "custom"], value="Sobel x (vertical edges)", description="kernel"),
    custom=widgets.Text(value="0 -1 0; -1 5 -1; 0 -1 0", description="custom", continuous_update=False),
)
kernel_lab

# %% [markdown]
# The widget is code, so we test it: the shift kernel must move the picture one pixel left, a blur must lower the
# detail (total variation) of what is drawn, and a malformed kernel must be reported, not crash.

# %%
kernel_lab.controls["kernel"].value = "custom"
kernel_lab.controls["custom"].value = "0 0 0; 0 0 1; 0 0 0"
shown = torch.tensor(kernel_lab.figure.axes[1].images[0].get_array().data)
lib.close(shown[:, :-1], gray[:, 1:], "custom kernel '0 0 0; 0 0 1; 0 0 0' = photo moved one pixel left")
kernel_lab.controls["kernel"].value = "box blur"
blurred = torch.tensor(kernel_lab.figure.axes[1].images[0].get_array().data)
assert total_variation(blurred) < 0.7 * total_variation(gray) and "box blur" in kernel_lab.figure.axes[0].get_title()
kernel_lab.controls["kernel"].value = "custom"
kernel_lab.controls["custom"].value = "1 2; 3 4"
assert "odd size" in kernel_lab.figure.axes[0].get_title()
kernel_lab.controls["kernel"].value = "Sobel x (vertical edges)"
print(f"✓ kernel widget: {kernel_lab.redraws} redraws, shift/blur/error cases behave")

# %% [markdown]
# ## 4 · A common pitfall: the flatten size
#
# Between the last pooling layer and the first fully connected layer, the feature maps are flattened into one
# vector per image, and `nn.Linear` must be told its length, $C \cdot H \cdot W$ of the last feature map. Many
# tutorials hard-code it. Here is a typical network whose flatten size was worked out for 28×28 inputs (two 2×2
# poolings: 28 → 14 → 7, so `64 * 7 * 7`), fed 32×32 colour images: 64 real 32×32 tiles cut from the photo.

# %%
tiles = photo[:, :256, :256].unfold(1, 32, 32).unfold(2, 32, 32).permute(1, 2, 0, 3, 4).reshape(64, 3, 32, 32)


class TutorialCNN(nn.Module):
    """Two conv–ReLU–pool blocks and two linear layers, with the flatten size written in by hand."""

    def __init__(self, flatten_size: int = 64 * 7 * 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(flatten_size, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x).flatten(1))))


broken = TutorialCNN()
try:
    broken(tiles)
    raise AssertionError("expected a shape error")
except RuntimeError as error:
    print("RuntimeError:", error)
    assert "4096" in str(error) and "3136" in str(error)

# %% [markdown]
# The error says the flattened features have 4,096 numbers per image, not 3,136 = 64·7·7. Trace the sizes with
# the output-size formula of section 2.4: 32 → conv (K=3, P=1) → 32 → pool → 16 → conv → 16 → pool → **8**, so
# the flatten size is 64·8·8 = 4,096.
#
# It gets worse with `x.view(-1, 64 * 7 * 7)` instead of `flatten(1)`: `-1` lets PyTorch *choose* the batch
# size. For a batch of 49 tiles, 49·4,096 = 64·3,136, so the view silently produces 64 "images" made of
# pieces of different tiles, and the model returns 64 predictions for 49 inputs with no error at all.

# %%
sizes = [32]
for kernel, stride, padding in [(3, 1, 1), (2, 2, 0), (3, 1, 1), (2, 2, 0)]:  # conv, pool, conv, pool
    sizes.append(conv_output_size(sizes[-1], kernel, stride, padding))
print("spatial size through the layers:", " → ".join(map(str, sizes)))
assert broken.features(tiles).flatten(1).shape[1] == 64 * sizes[-1] ** 2 == 4096

with torch.no_grad():
    silent = broken.fc2(F.relu(broken.fc1(broken.features(tiles[:49]).view(-1, 64 * 7 * 7))))
print(f"49 tiles in, {len(silent)} predictions out (view(-1, ...) reshuffled the batch)")
assert silent.shape == (64, 10)

# %% [markdown]
# **The fix: let a dummy forward pass measure the size.** Run the feature extractor once on a zero tensor of the
# input shape (no data, no gradients) and read off the length. Two alternatives: `nn.LazyLinear`, which infers its
# input size on the first call, and global average pooling (`nn.AdaptiveAvgPool2d(1)`, as in ResNet), which makes
# the flatten size equal the channel count for *any* input size.

# %%
def flatten_size(features: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]) -> int:
    """Length of the flattened feature vector for one input of `input_shape` (C, H, W), by a dummy forward pass."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).flatten(1).shape[1]


size = flatten_size(TutorialCNN().features, (3, 32, 32))
fixed = TutorialCNN(flatten_size=size)
assert size == 4096 and fixed(tiles).shape == (64, 10)
assert flatten_size(TutorialCNN().features, (3, 28, 28)) == 64 * 7 * 7  # the size the tutorial assumed

global_pool = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
for side in (32, 57, 128):
    assert global_pool(photo[None, :, :side, :side]).shape == (1, 10)
print(f"✓ dummy forward pass gives flatten size {size}; the fixed model maps 64 tiles to {tuple(fixed(tiles).shape)}; "
      "the global-pooling model accepts 32, 57 and 128 pixel inputs")

# %% [markdown]
# ## 5 · Build and train a CNN on handwritten digits
#
# ### 5.1 Batch normalisation
#
# Our CNN puts a **batch normalisation (批归一化)** layer after each convolution. In training mode it standardises
# every channel $c$ with the mean and variance of the current mini-batch, taken over the $m = NHW$ values of that
# channel (all images, all positions), then applies a learned scale $\gamma_c$ and shift $\beta_c$:
#
# $$ \mu_c = \frac1m\sum_{n,h,w} x_{nchw},\qquad \sigma_c^2 = \frac1m\sum_{n,h,w}(x_{nchw}-\mu_c)^2,\qquad
#    y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_c}{\sqrt{\sigma_c^2+\epsilon}} + \beta_c . $$
#
# Keeping every channel at a steady scale lets the next layer learn without chasing the scale of the last one, so
# training tolerates larger learning rates; the batch-to-batch noise in $\mu_c, \sigma_c$ also regularises a
# little. But a prediction must not depend on which other images share its batch (and a batch may be one image).
# So the layer also keeps running averages, updated at every training step with PyTorch's `momentum` $\alpha = 0.1$
# (the variance with the unbiased factor $m/(m-1)$),
#
# $$ \hat\mu_c \leftarrow (1-\alpha)\,\hat\mu_c + \alpha\,\mu_c,\qquad
#    \hat\sigma_c^2 \leftarrow (1-\alpha)\,\hat\sigma_c^2 + \alpha\,\tfrac{m}{m-1}\,\sigma_c^2, $$
#
# and in evaluation mode (`model.eval()`) it uses $\hat\mu_c, \hat\sigma_c^2$ in place of the batch statistics.
# These two running vectors are *buffers*, saved with the model but not learned, which is why section 2.7 counts
# only $2C$ parameters. We compute all of it by hand on real convolution outputs and compare with
# `nn.BatchNorm2d` in both modes.

# %%
def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
               running_var: torch.Tensor, training: bool, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch normalisation of (N, C, H, W) by hand; returns (output, new running mean, new running variance)."""
    if training:
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        m = x.numel() // x.shape[1]
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean, running_var
    per_channel = (1, -1, 1, 1)
    normalised = (x - mean.view(per_channel)) / torch.sqrt(var.view(per_channel) + eps)
    return gamma.view(per_channel) * normalised + beta.view(per_channel), running_mean, running_var


torch.manual_seed(0)
conv_out = nn.Conv2d(1, 8, 5, padding=2)(split.train_x[:96].cpu()).detach()  # 96 digits × 8 channels × 28×28
bn = nn.BatchNorm2d(8)
with torch.no_grad():
    bn.weight.uniform_(0.5, 2.0)
    bn.bias.uniform_(-1.0, 1.0)
    mean_hat, var_hat = torch.zeros(8), torch.ones(8)
    bn.train()
    # four training steps: three batches of 32 digits, then 2 digits cropped to 3×3 (m = 18, where m/(m-1) matters)
    for i, batch in enumerate([*conv_out.split(32), conv_out[:2, :, 12:15, 12:15]]):
        ours, mean_hat, var_hat = batch_norm(batch, bn.weight, bn.bias, mean_hat, var_hat, training=True)
        lib.close(ours, bn(batch), f"train mode, batch {i}: batch statistics", atol=1e-5, quiet=True)
        lib.close(mean_hat, bn.running_mean, "running mean", atol=1e-6, quiet=True)
        lib.close(var_hat, bn.running_var, "running variance", rtol=1e-4, quiet=True)
    bn.eval()
    ours, _, _ = batch_norm(conv_out, bn.weight, bn.bias, mean_hat, var_hat, training=False)
    lib.close(ours, bn(conv_out), "eval mode: running statistics", atol=1e-5, quiet=True)
print("✓ batch norm by hand = nn.BatchNorm2d in train mode (4 steps, outputs and running statistics) and eval mode")

with torch.no_grad():  # the same digit (index 0) in two different batches
    batch_a, batch_b = conv_out[:16], torch.cat([conv_out[:1], conv_out[48:63]])
    bn.train()
    train_gap = (bn(batch_a)[0] - bn(batch_b)[0]).abs().max().item()
    bn.eval()
    eval_gap = (bn(batch_a)[0] - bn(batch_b)[0]).abs().max().item()
print(f"digit 0's output in two different batches differs by up to {train_gap:.3f} in train mode, "
      f"{eval_gap:.1e} in eval mode")
assert train_gap > 0.01 and eval_gap < 1e-6

# %% [markdown]
# ### 5.2 The model
#
# Two blocks of convolution → batch normalisation → ReLU → 2×2 max pooling, then dropout and two fully connected
# layers. The flatten size is measured with the dummy forward pass of section 4.
#
# | layer | output shape (per image) |
# |---|---|
# | input | 1 × 28 × 28 |
# | conv 5×5 (P=2) → BN → ReLU → max pool 2 | $C_1$ × 14 × 14 |
# | conv 3×3 (P=1) → BN → ReLU → max pool 2 | $C_2$ × 7 × 7 |
# | flatten → dropout → linear → ReLU → dropout → linear | 10 logits |

# %%
class DigitCNN(nn.Module):
    """conv5-BN-ReLU-pool → conv3-BN-ReLU-pool → MLP head, for 1×28×28 images."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(flatten_size(self.features, (1, 28, 28)), hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digit_cnn_param_count(c1: int, c2: int, hidden: int = 128) -> int:
    """The parameter-count formulas of section 2.7, layer by layer."""
    return (conv_param_count(1, c1, 5) + 2 * c1 + conv_param_count(c1, c2, 3) + 2 * c2
            + (c2 * 7 * 7) * hidden + hidden + hidden * 10 + 10)


def first_linear_share(model: DigitCNN) -> float:
    """Share of the model's parameters that sit in the first fully connected layer."""
    return count(model.classifier[2]) / count(model)


torch.manual_seed(0)
cnn = lib.prepare_model(DigitCNN(S["channels"]), device)
assert count(cnn) == digit_cnn_param_count(*S["channels"])
print(cnn)
print(f"parameters: {count(cnn):,} (formula agrees), {first_linear_share(cnn):.1%} of them in the first linear layer "
      f"({count(cnn.classifier[2]):,}); chapter 02's MLP had about 670,000")
standard_width = DigitCNN((16, 32))  # the standard profile's widths, which the text quotes
assert count(standard_width) == 207_274 and round(first_linear_share(standard_width), 3) == 0.969

# %% [markdown]
# At the standard profile's widths (16 and 32 channels) that is 207,274 parameters, and 96.9% of them sit in one
# place: the first linear layer, which connects all $32 \cdot 7 \cdot 7 = 1{,}568$ flattened features to 128 hidden
# units. The convolutions, which do the seeing, have about 5,000. Exercise 5 asks what to do about that.
#
# ### 5.3 Data augmentation
#
# **Data augmentation (数据增强).** With a few thousand training digits, the network would soon memorise them. Every
# mini-batch is therefore redrawn with a small random rotation (±10°), scaling (±10%) and shift (±2 pixels) per
# image: `F.affine_grid` builds the sampling grid of each transform and `F.grid_sample` resamples the image
# (bilinear interpolation). These are changes that do not change the digit, so the network learns to ignore them.

# %%
def affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Rotate each image by angle[i] degrees, scale by scale[i], shift by shift_px[i] = (dx, dy) pixels."""
    a = torch.deg2rad(angle)
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / scale, -torch.sin(a) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / scale, torch.cos(a) / scale
    theta[:, :, 2] = -shift_px * 2 / x.shape[-1]  # pixels → the [-1, 1] coordinates affine_grid uses
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, scale: float = 0.1,
                  shift_px: float = 2.0) -> torch.Tensor:
    """A different small random rotation, scaling and shift for every image of the batch."""
    u = torch.rand(len(x), 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
    return affine(x, u[:, 0] * degrees, 1 + u[:, 1] * scale, u[:, 2:] * shift_px)


same = affine(digits[:4], torch.zeros(4), torch.ones(4), torch.zeros(4, 2))
lib.close(same, digits[:4], "affine with angle 0, scale 1, shift 0 is the identity", atol=1e-5)
lib.close(affine(digits[:4], torch.zeros(4), torch.ones(4), torch.tensor([[3.0, 2.0]] * 4)), shift(digits[:4], 2, 3),
          "affine shift by (dx=3, dy=2) pixels = moving the digit", atol=1e-5)
examples = random_affine(split.train_x[:1].repeat(10, 1, 1, 1), torch.Generator().manual_seed(1))
lib.image_grid(torch.cat([split.train_x[:1], examples]), ["original"] + ["augmented"] * 10, columns=11)
plt.show()

# %% [markdown]
# ### 5.4 Training, choosing on validation
#
# Training uses AdamW with a one-cycle learning-rate schedule, and `lib.fit` for the loop (progress bar, live
# curves, **validation** accuracy after each epoch, checkpoint per epoch: interrupt and re-run to resume; the
# augmentation generator is saved with the checkpoint, so a resumed run draws the same random transforms). The
# epochs, learning rate, widths and augmentation strength were chosen by watching this validation curve. The test
# digits are read once, after training, and their accuracy is the number we report.

# %%
batches = lib.Batches(split.train_x, split.train_y, batch_size=S["batch_size"], seed=0)
optimizer = torch.optim.AdamW(cnn.parameters(), lr=1e-3, weight_decay=1e-4)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=S["epochs"] * len(batches))
plain_step = lib.supervised_step(cnn, optimizer)
augment_rng = torch.Generator().manual_seed(0)


def step(x: torch.Tensor, y: torch.Tensor) -> dict:
    """Augment the batch, take the usual supervised step, advance the schedule."""
    result = plain_step(random_affine(x, augment_rng), y)
    schedule.step()
    return result


history = lib.fit(
    step, batches, S["epochs"],
    evaluate=lambda: {"val_accuracy": lib.accuracy(cnn, split.val_x, split.val_y)},
    checkpoint=lib.checkpoint_path("03_cnn", "cnn", epochs=S["epochs"], channels=S["channels"],
                                   batch_size=S["batch_size"]),
    state={"model": cnn, "optimizer": optimizer, "schedule": schedule, "augment": augment_rng},
)
val_curve = history["val_accuracy"]
val_accuracy = val_curve[-1]
print("validation accuracy per epoch:", " ".join(f"{a:.3f}" for a in val_curve))
assert val_accuracy > val_curve[0], "validation accuracy should rise during training"
assert max(val_curve) - val_accuracy <= 0.01, "the last epoch should be (about) the best: fewer epochs would do"

# %% [markdown]
# The validation curve has flattened by the last epoch (it ends within a point of its best), which is how the number
# of epochs was chosen. Now, once, the test digits:

# %%
test_accuracy = lib.accuracy(cnn, split.test_x, split.test_y)
bar = lib.pick(BARS)
print(f"validation accuracy {val_accuracy:.4f} on {len(split.val_y):,} digits; "
      f"test accuracy {test_accuracy:.4f} on {len(split.test_y):,} digits (bar {bar})")
assert test_accuracy >= bar, f"test accuracy {test_accuracy:.4f} is below the bar {bar}"

# %% [markdown]
# **Why `model.eval()` matters.** `lib.predict` switches the model to evaluation mode, so batch norm uses its
# running statistics. Left in training mode, each prediction is normalised with the statistics of its batch. With
# a mixed batch those are close to the running ones, but a batch of ten 7s (as when a scanner processes one sorted
# tray), or a single image, has its own mean and variance in every channel, and the network's view of every digit
# shifts. Below: the validation digits with only the batch-norm layers in training mode (dropout off), in shuffled
# batches of 10, in batches of 10 sorted by label, and one at a time. The mixed batches do as well as eval mode; the
# other two lose several points, and a model's answer for one image would depend on what else is in its batch.

# %%
@torch.no_grad()
def accuracy_with_batch_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 10) -> float:
    """Accuracy when batch norm normalises each batch with its own statistics (a copy, so running stats stay)."""
    probe = copy.deepcopy(model).eval()
    for module in probe.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.train()
    predictions = torch.cat([probe(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return (predictions == y).float().mean().item()


shuffled = torch.randperm(len(split.val_y), generator=torch.Generator().manual_seed(0)).to(device)
by_label = split.val_y.argsort(stable=True)
mixed_batches = accuracy_with_batch_statistics(cnn, split.val_x[shuffled], split.val_y[shuffled])
one_class_batches = accuracy_with_batch_statistics(cnn, split.val_x[by_label], split.val_y[by_label])
single_images = accuracy_with_batch_statistics(cnn, split.val_x, split.val_y, batch=1)
print(f"validation accuracy: eval mode {val_accuracy:.3f} | with batch statistics: mixed batches of 10 "
      f"{mixed_batches:.3f}, one digit per batch of 10 {one_class_batches:.3f}, one image per batch {single_images:.3f}")
assert abs(mixed_batches - val_accuracy) < 0.02, "mixed batches have statistics close to the running ones"
assert one_class_batches < val_accuracy - 0.02 and single_images < val_accuracy - 0.02

# %% [markdown]
# ## 6 · Look inside
#
# ### Learned first-layer filters
#
# Each first-layer kernel is a 5×5 grid of weights that we can draw as an image (red positive, blue negative).
# Compare them with the hand-designed kernels of section 3: several are oriented edge or stroke detectors (a red
# band next to a blue band); others are noisier, because a few thousand digits and a few epochs put little pressure
# on the network to smooth them. Trained on the full MNIST (full profile) they become cleaner.

# %%
first = cnn.features[0].weight.detach().float().cpu()[:, 0]  # (C1, 5, 5)
fig, axes = plt.subplots(2, len(first) // 2, figsize=(len(first) // 2 * 0.9, 2.3))
for w, ax in zip(first, axes.flat, strict=True):
    ax.imshow(w, cmap="RdBu_r", vmin=-w.abs().max(), vmax=w.abs().max())
    ax.axis("off")
fig.suptitle(f"the {len(first)} learned 5×5 kernels of the first layer (red +, blue −)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Widget: feature maps of a chosen digit
#
# Pick a validation digit and a block. Block 1 maps (14×14) still look like the digit, filtered; block 2 maps (7×7)
# are coarser and respond to parts (a loop, an end point, a crossing). Bright = strong activation.

# %%
BLOCKS = {"block 1 (14×14)": 4, "block 2 (7×7)": 8}  # how many layers of cnn.features to run
val_probs = lib.predict(cnn, split.val_x).softmax(1).cpu()
val_pred = val_probs.argmax(1)
val_y = split.val_y.cpu()


@torch.no_grad()
def activations(index: int, block: str) -> torch.Tensor:
    """Feature maps (C, H, W) of validation digit `index` after the given block."""
    cnn.eval()
    return cnn.features[: BLOCKS[block]](split.val_x[index : index + 1]).float().cpu()[0]


def draw_feature_maps(index: int, block: str) -> plt.Figure:
    maps = activations(index, block)[:16]
    fig, axes = plt.subplots(2, 9, figsize=(12, 3))
    axes[0, 0].imshow(split.val_x[index, 0].cpu(), cmap="gray")
    axes[0, 0].set_title(f"#{index}: label {int(val_y[index])}", fontsize=8)
    axes[1, 0].bar(range(10), val_probs[index])
    axes[1, 0].set_title(f"predicted {int(val_pred[index])}", fontsize=8)
    axes[1, 0].set_xticks(range(0, 10, 3))
    for c, ax in enumerate([a for row in axes for a in row[1:]]):
        ax.imshow(maps[c], cmap="magma", vmin=0)
        ax.set_title(f"ch {c}", fontsize=7)
    for ax in axes.flat:
        if ax is not axes[1, 0]:
            ax.axis("off")
    fig.suptitle(f"{block}: first 16 channels for validation digit #{index}", fontsize=10)
    fig.tight_layout()
    return fig


maps_explorer = lib.widgets.Explorer(
    draw_feature_maps,
    index=widgets.IntSlider(value=0, min=0, max=len(val_y) - 1, description="digit"),
    block=widgets.Dropdown(options=list(BLOCKS), value="block 1 (14×14)", description="layer"),
)
maps_explorer

# %% [markdown]
# Test the widget: move to a misclassified digit, switch to block 2, and check that what is drawn is exactly the
# network's feature map and prediction.

# %%
wrong_idx = torch.nonzero(val_pred != val_y).flatten()
target = int(wrong_idx[0]) if len(wrong_idx) else 1
maps_explorer.controls["index"].value = target
maps_explorer.controls["block"].value = "block 2 (7×7)"
drawn = torch.tensor(maps_explorer.figure.axes[1].images[0].get_array().data)  # channel 0 of the chosen block
lib.close(drawn, activations(target, "block 2 (7×7)")[0], f"widget shows block 2, channel 0 of digit #{target}")
assert drawn.shape == (7, 7) and maps_explorer.figure.axes[9].get_title() == f"predicted {int(val_pred[target])}"

# %% [markdown]
# ### Confusion matrix and the most confident mistakes
#
# The **confusion matrix (混淆矩阵)** counts, for each true digit (row), what the network predicted (column).
# Below it: the wrong predictions the network was *most sure of*. Some are genuinely ambiguous handwriting, a few
# look like labelling errors; both are worth knowing about before trusting a model.

# %%
matrix = lib.viz.confusion_matrix(val_pred, val_y, 10)
assert matrix.sum() == len(val_y) and matrix.trace() == (val_pred == val_y).sum()
lib.viz.plot_confusion(matrix, split.classes)
plt.show()
off_diagonal = matrix - torch.diag(matrix.diag())
worst = divmod(int(off_diagonal.argmax()), 10)
print(f"most frequent confusion: true {worst[0]} predicted as {worst[1]} ({int(off_diagonal.max())} times)")

# %%
confidence = val_probs.max(1).values
mistakes = wrong_idx[confidence[wrong_idx].argsort(descending=True)][:12]
lib.image_grid(split.val_x[mistakes.to(device)],
               [f"{int(val_y[i])}→{int(val_pred[i])} ({confidence[i]:.2f})" for i in mistakes], columns=12)
plt.show()
assert all(val_pred[i] != val_y[i] for i in mistakes)
assert len(mistakes) == 0 or confidence[mistakes[0]] == confidence[wrong_idx].max()

# %% [markdown]
# ## 7 · Applications in industry
#
# * **Recognition.** Image classification and face recognition (photo libraries, phone unlock, access control);
#   object detection (YOLO, Faster R-CNN) in driver assistance, retail shelf monitoring and traffic cameras all
#   use a CNN backbone that turns pixels into feature maps.
# * **Inspection.** Cameras on production lines check welds, circuit boards, bottles, textiles and steel surfaces
#   for defects faster and more consistently than people; the simplest systems find each part by **template
#   matching (模板匹配)**, sliding a reference image over the shot (a convolution), and learned CNNs flag defects.
# * **Medical imaging (医学影像).** CNNs screen retinal photos for diabetic retinopathy, flag findings on chest
#   X-rays and CT, and segment tumours (U-Net); they assist, and are regulated as medical devices.
# * **Document reading.** LeCun's LeNet read handwritten cheque amounts and postcodes in the 1990s; today's optical
#   character recognition (**OCR, 光学字符识别**) reads invoices, forms, ID cards and receipts.
# * Inside large models: the vision encoders of multimodal models began as CNNs and today are often vision
#   transformers that keep the convolutional "patch embedding" as their first layer (chapter 08).
#
# ### A document reader for five-digit numbers
#
# Reading a handwritten number (a postcode, an amount) is a pipeline: **segment** the strip into characters at
# blank columns, **normalise** each one the way MNIST was made (longer side 20 pixels, centre of mass at the centre
# of a 28×28 frame), and **classify** it with the CNN. The strips are validation digits written side by side with
# small gaps (the pipeline's rules were tuned by looking at its mistakes, so they are judged on validation). A number
# is read correctly only if *all five* digits are; with independent errors that happens with probability $p^5$.

# %%
def make_strip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Write digit images (k, 28, 28) side by side, each trimmed to its ink, with 2–6 blank columns between."""
    pieces = [torch.zeros(28, 4)]
    for image in images:
        ink = torch.nonzero(image.sum(0) > 0).flatten()
        gap = int(torch.randint(2, 7, (1,), generator=generator))
        pieces += [image[:, ink.min() : ink.max() + 1], torch.zeros(28, gap)]
    return torch.cat(pieces, dim=1)


def segment(strip: torch.Tensor, min_ink: float = 5.0) -> list[torch.Tensor]:
    """Cut a strip at blank columns (a single blank column inside a stroke does not cut); drop specks."""
    ink = (strip.sum(0) > 0).tolist()
    inked = [ink[c] or (0 < c < len(ink) - 1 and ink[c - 1] and ink[c + 1]) for c in range(len(ink))]
    pieces, start = [], None
    for column, on in enumerate(inked + [False]):
        if on and start is None:
            start = column
        elif not on and start is not None:
            piece = strip[:, start:column]
            rows = torch.nonzero(piece.sum(1) > 0).flatten()
            if piece.sum() >= min_ink:
                pieces.append(piece[rows.min() : rows.max() + 1])
            start = None
    return pieces


def normalise(piece: torch.Tensor) -> torch.Tensor:
    """MNIST-style: scale the longer side to 20 pixels, paste into 28×28, move the centre of mass to the centre."""
    h, w = piece.shape
    size = (max(1, round(h * 20 / max(h, w))), max(1, round(w * 20 / max(h, w))))
    small = F.interpolate(piece[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    canvas = torch.zeros(28, 28)
    top, left = (28 - size[0]) // 2, (28 - size[1]) // 2
    canvas[top : top + size[0], left : left + size[1]] = small.clamp(0, 1)
    grid, mass = torch.arange(28.0), canvas.sum()
    dy = round(13.5 - (canvas.sum(1) * grid).sum().item() / mass.item())
    dx = round(13.5 - (canvas.sum(0) * grid).sum().item() / mass.item())
    return torch.roll(canvas, (max(-4, min(4, dy)), max(-4, min(4, dx))), dims=(0, 1))


def read_number(strip: torch.Tensor) -> str:
    """Segment, normalise and classify: the digits the CNN reads in a strip."""
    pieces = segment(strip)
    if not pieces:
        return ""
    batch = torch.stack([normalise(p) for p in pieces])[:, None].to(device)
    return "".join(str(int(d)) for d in lib.predict(cnn, batch).argmax(1))


order = torch.randperm(len(val_y), generator=torch.Generator().manual_seed(0))
groups = order[: (len(order) // 5) * 5].view(-1, 5)[: S["strips"]]
strip_rng = torch.Generator().manual_seed(0)
strips = [make_strip(split.val_x[g.to(device), 0].cpu(), strip_rng) for g in groups]
truths = ["".join(str(int(val_y[i])) for i in g) for g in groups]
readings = [read_number(s) for s in strips]
segmented = sum(len(r) == 5 for r in readings) / len(readings)
digit_reading = sum(sum(a == b for a, b in zip(r, t, strict=True)) for r, t in zip(readings, truths, strict=True)
                    if len(r) == 5) / (5 * len(truths))
string_accuracy = sum(r == t for r, t in zip(readings, truths, strict=True)) / len(truths)
print(f"{len(strips)} strips of validation digits: cut into 5 pieces {segmented:.1%}, digits read correctly "
      f"{digit_reading:.1%}, whole numbers {string_accuracy:.1%} (the CNN alone: p = {val_accuracy:.3f} per digit, "
      f"p^5 = {val_accuracy**5:.1%})")
assert segmented >= 0.9 and digit_reading >= val_accuracy - 0.05, "the reading pipeline loses too many digits"

fig, axes = plt.subplots(3, 1, figsize=(7, 3.2))
for ax, s, r, t in zip(axes, strips, readings, truths, strict=False):
    ax.imshow(s, cmap="gray")
    ax.set_title(f"read {r}  (true {t}) {'✓' if r == t else '✗'}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# Errors compound in a pipeline: 98% per digit is only about 90% per five-digit number, and the reader loses a little
# more to segmentation and normalisation. Real readers add a language or checksum model (a postcode must exist, an
# amount in words must match the amount in figures) and must split touching digits, which blank columns cannot.

# %% [markdown]
# ## 8 · Challenges and limits
#
# ### 8.1 Data hunger
#
# How much labelled data does a CNN need? We train the same small CNN (without augmentation) and, for comparison,
# an MLP on growing subsets of the training digits, each for the same number of updates (learning rate decayed
# linearly to zero), and measure accuracy on the same validation digits (this is an experiment to look at and learn
# from, so it stays off the test digits). Labelled data is the expensive part of most industrial projects (a
# radiologist's time, a defect that occurs once in ten thousand parts).

# %%
def train_on_subset(make_model: Callable[[], nn.Module], n: int, steps: int, seed: int = 0) -> float:
    """Train a fresh model on the first n training digits for `steps` Adam updates; return validation accuracy."""
    torch.manual_seed(seed)
    model = lib.prepare_model(make_model(), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / steps)  # linear decay to zero
    train_step = lib.supervised_step(model, optimizer)
    stream = (b for epoch in itertools.count()
              for b in lib.Batches(split.train_x[:n], split.train_y[:n], batch_size=64, seed=seed + epoch))
    for _ in range(steps):
        train_step(*next(stream))
        decay.step()
    return lib.accuracy(model, split.val_x, split.val_y)


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


sizes = [n for n in S["hunger_sizes"] if n <= len(split.train_y)]
hunger = {"CNN": [], "MLP": []}
for n in sizes:
    hunger["CNN"].append(train_on_subset(lambda: DigitCNN((8, 16), hidden=64, dropout=0.0), n, S["hunger_steps"]))
    hunger["MLP"].append(train_on_subset(small_mlp, n, S["hunger_steps"]))
    print(f"{n:>6} training digits: CNN {hunger['CNN'][-1]:.3f}, MLP {hunger['MLP'][-1]:.3f}")

fig = lib.viz.plot_curves({k: (sizes, v) for k, v in hunger.items()}, "training digits (log scale)",
                          "validation accuracy",
                          title=f"accuracy vs training-set size ({S['hunger_steps']} updates each)")
fig.axes[0].set_xscale("log")
plt.show()
per_doubling = [(b - a) / math.log2(m / n)
                for n, m, a, b in zip(sizes, sizes[1:], hunger["CNN"], hunger["CNN"][1:], strict=False)]
margins = [c - m for c, m in zip(hunger["CNN"], hunger["MLP"], strict=True)]
print("CNN: validation accuracy gained per doubling of the data, from the smallest step to the largest:",
      ", ".join(f"{100 * g:.1f}" for g in per_doubling), "points")
assert hunger["CNN"][-1] > hunger["CNN"][0] + 0.05, "more data should help the CNN"
assert per_doubling[-1] < per_doubling[0] / 2, "the later doublings should buy much less than the first"
assert min(margins) > 0 and margins[0] > margins[-1], "the CNN should beat the MLP everywhere, most with little data"

# %% [markdown]
# More data helps, but the later doublings buy much less than the first ones (printed above): even on the log axis
# the curve bends over rather than rising in a straight line, and the error keeps falling ever more slowly. The
# CNN beats the MLP at every size, by more at the small end than at the large end: its built-in assumptions
# (locality, weight sharing) make it more data-efficient, and augmentation (section 5.3) stretches the data further.
# The industrial remedies are **transfer learning (迁移学习)**: start from a network pretrained on millions of
# images and fine-tune it on a few hundred, and self-supervised pretraining on unlabelled images; that is the road
# that led to today's large vision models.
#
# ### 8.2 Adversarial fragility: the fast gradient sign method (FGSM)
#
# A tiny, deliberately chosen change to an image can flip a CNN's answer while a person sees no difference:
# an **adversarial example (对抗样本)**. The **fast gradient sign method (快速梯度符号法, FGSM)** of Goodfellow et al.
# (2015) takes one step that increases the loss as much as possible, to first order, among all perturbations with
# every pixel changed by at most $\varepsilon$:
#
# $$ x_{\text{adv}} = \operatorname{clip}_{[0,1]}\!\Big(x + \varepsilon\,\operatorname{sign}\big(\nabla_x\,
#    \mathcal{L}(f(x), y)\big)\Big). $$
#
# Why the sign: to first order the loss rises by $\nabla_x\mathcal{L}\cdot\delta$, and over the box
# $\|\delta\|_\infty\le\varepsilon$ that dot product is largest for $\delta = \varepsilon\,\operatorname{sign}(\nabla_x
# \mathcal{L})$, where it equals $\varepsilon\,\|\nabla_x\mathcal{L}\|_1$. We check both facts numerically (in
# float64, with a tiny $\varepsilon$ so that first order is accurate), then attack the trained CNN: a curve over
# $\varepsilon$ on the validation digits, and the reported number, $\varepsilon = 0.1$ (a tenth of the pixel range),
# once on the test digits.

# %%
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, clip: bool = True) -> torch.Tensor:
    """Fast gradient sign method: move every pixel by ±epsilon in the direction that raises the loss."""
    model.eval()
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():  # works even when called under torch.no_grad()
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    adversarial = x.detach() + epsilon * grad.sign()
    return adversarial.clamp(0, 1) if clip else adversarial


model64 = copy.deepcopy(cnn).cpu().double().eval()
# The digits' blank background gives max-pooling windows with exactly equal values, where the loss has kinks and a
# first-order check is not exact. The check is about the network as a function, so we run it on 28×28 tiles of the
# textured part of the photo (no flat regions), each with the class the CNN predicts for it as its label.
x64 = gray[300:356, 416:640].unfold(0, 28, 28).unfold(1, 28, 28).reshape(-1, 1, 28, 28).double()
y64 = model64(x64).argmax(1).detach()
x_grad = x64.clone().requires_grad_(True)
loss64 = F.cross_entropy(model64(x_grad), y64, reduction="sum")
(gradient,) = torch.autograd.grad(loss64, x_grad)
tiny = 1e-6
with torch.no_grad():
    rise = F.cross_entropy(model64(fgsm(model64, x64, y64, tiny, clip=False)), y64, reduction="sum") - loss64
    lib.close(rise, tiny * gradient.abs().sum(), "loss rise of an FGSM step = ε·‖∇ₓL‖₁ (first order)", rtol=1e-3)
    signs = torch.randint(0, 2, (10, *x64.shape), generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    random_rises = [F.cross_entropy(model64(x64 + tiny * s), y64, reduction="sum") - loss64 for s in signs]
assert rise > max(random_rises), "FGSM should raise the loss more than any random ±ε perturbation"
print(f"✓ FGSM raises the loss {rise / tiny:.1f}·ε; the best of 10 random sign patterns only "
      f"{max(random_rises) / tiny:.1f}·ε")


def accuracy_under(attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_all: torch.Tensor,
                   y_all: torch.Tensor, batch: int = 1000) -> float:
    """Accuracy of the CNN on digits x_all changed by attack(x, y) → perturbed x."""
    correct = 0
    for i in range(0, len(y_all), batch):
        x, y = x_all[i : i + batch], y_all[i : i + batch]
        correct += (lib.predict(cnn, attack(x, y)).argmax(1) == y).sum().item()
    return correct / len(y_all)


def random_sign_noise(x: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """Random ±epsilon per pixel: the same size of change as FGSM, in a random direction."""
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device) * 2 - 1
    return (x + epsilon * signs).clamp(0, 1)


adversarial = fgsm(cnn, split.val_x[:16], split.val_y[:16], EPSILON)
assert (adversarial - split.val_x[:16]).abs().max() <= EPSILON + 1e-6 and adversarial.min() >= 0
epsilons = [0.0, 0.05, 0.1, 0.2, 0.3]
noise_rng = torch.Generator().manual_seed(0)
fgsm_curve = [accuracy_under(lambda x, y, e=e: fgsm(cnn, x, y, e) if e else x, split.val_x, split.val_y)
              for e in epsilons]
noise_curve = [accuracy_under(lambda x, y, e=e: random_sign_noise(x, e, noise_rng), split.val_x, split.val_y)
               for e in epsilons]
assert abs(fgsm_curve[0] - val_accuracy) < 1e-6
assert fgsm_curve[2] < noise_curve[2] - 0.05 and fgsm_curve[-1] < fgsm_curve[1] < fgsm_curve[0]
assert noise_curve[2] > noise_curve[0] - 0.05, "random ±0.1 noise should barely matter"

fig = lib.viz.plot_curves({"FGSM attack": (epsilons, fgsm_curve), "random ±ε noise": (epsilons, noise_curve)},
                          "ε (largest change per pixel)", "validation accuracy",
                          title="same-sized changes, different effect")
plt.show()

# The reported numbers: ε = 0.1, once, on the test digits.
fgsm_accuracy = accuracy_under(lambda x, y: fgsm(cnn, x, y, EPSILON), split.test_x, split.test_y)
test_noise_rng = torch.Generator().manual_seed(0)
noise_accuracy = accuracy_under(lambda x, y: random_sign_noise(x, EPSILON, test_noise_rng), split.test_x, split.test_y)
print(f"test digits: clean accuracy {test_accuracy:.3f} | random ±{EPSILON} noise {noise_accuracy:.3f} | "
      f"FGSM ε={EPSILON}: {fgsm_accuracy:.3f}")
assert fgsm_accuracy < noise_accuracy - 0.05 and noise_accuracy > test_accuracy - 0.05

shown = split.val_x[:8]
attacked = fgsm(cnn, shown, split.val_y[:8], EPSILON)
before, after = lib.predict(cnn, shown).argmax(1), lib.predict(cnn, attacked).argmax(1)
lib.image_grid(torch.cat([shown, attacked]), [f"clean: {int(p)}" for p in before] + [f"FGSM: {int(p)}" for p in after],
               columns=8)
plt.show()

# %% [markdown]
# Up to ε = 0.1 the same change in random directions barely matters (on the validation curve and on the test
# digits); aimed along the gradient sign it breaks the network. The
# reason is linearity in high dimension: the loss change is a sum over 784 pixels of $\varepsilon\,|g_i|$, which
# adds up, while random signs cancel. Defences exist (adversarial training: train on FGSM or PGD examples;
# certified defences), all at a cost in clean accuracy or compute; the problem is open for every vision system,
# large or small, and matters wherever someone gains from fooling it (spam filters, content moderation, road-sign
# recognition).
#
# ### 8.3 What is built in, and what is learned: shifts, rotations
#
# Section 2.8 showed what the architecture guarantees: convolution is translation-*equivariant* (a shifted digit
# gives shifted feature maps), and max pooling makes the maps only *approximately* invariant to small shifts. This
# network's head is not invariant at all: flatten + linear gives every one of the 7×7 positions its own weights,
# so a digit moved far enough lands on weights that never saw it. Nothing in the architecture handles rotation or
# scale; the network tolerates the ±2-pixel shifts, ±10° rotations and ±10% scalings it was shown in training
# (augmentation *teaches* them). Below, on the validation digits: shifts and rotations beyond that range. Shifts
# stop at 4 pixels, because MNIST centres each digit's 20×20 box in the 28×28 frame, so up to 4 pixels the ink
# stays inside the frame and only the position changes. (A 6 turned far enough *is* a 9, so some of the loss at
# large angles is correct behaviour.)

# %%
def transformed(angle: float = 0.0, right: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An 'attack' for accuracy_under: rotate every digit by `angle` degrees and move it `right` pixels."""
    def apply(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(x)
        return affine(x, torch.full((n,), angle), torch.ones(n), torch.tensor([[right, 0.0]]).repeat(n, 1))
    return apply


pixel_shifts, angles = [0, 1, 2, 3, 4], [0, 10, 20, 30, 45, 60, 90]
shift_curve = [accuracy_under(transformed(right=float(d)), split.val_x, split.val_y) for d in pixel_shifts]
rotation_curve = [accuracy_under(transformed(angle=float(a)), split.val_x, split.val_y) for a in angles]
print("accuracy vs shift to the right:", {f"{d} px": round(acc, 3) for d, acc in zip(pixel_shifts, shift_curve, strict=True)})
print("accuracy vs rotation:", {f"{a}°": round(acc, 3) for a, acc in zip(angles, rotation_curve, strict=True)})
assert shift_curve[2] > shift_curve[0] - 0.1 and rotation_curve[1] > rotation_curve[0] - 0.1  # the trained range
assert shift_curve[4] < shift_curve[2] - 0.03 and rotation_curve[-1] < rotation_curve[0] - 0.3  # beyond it

# %% [markdown]
# ### 8.4 Compute per image
#
# A convolution does one multiply–add (MAC) per kernel weight per output position, so with $G$ groups
#
# $$ \text{MACs} = C_{out}\, H_{out} W_{out}\cdot\frac{C_{in}}{G} K_h K_w,\qquad
#    \text{MACs}_{\text{linear}} = d_{in}\, d_{out},\qquad \text{FLOPs} \approx 2\times\text{MACs}. $$
#
# We count the forward pass of our CNN layer by layer with these formulas and check the total against PyTorch's
# own FLOP counter (`torch.utils.flop_counter`), which counts every matrix multiply and convolution it executes.
# Training costs about three forward passes per image: the forward pass, the gradient with respect to the weights,
# and the gradient with respect to each layer's input (not needed for the first layer, whose input is the image).

# %%
def conv_macs(layer: nn.Conv2d, h_out: int, w_out: int) -> int:
    """Multiply–adds of one nn.Conv2d producing an h_out × w_out map."""
    kh, kw = layer.kernel_size
    return layer.out_channels * h_out * w_out * (layer.in_channels // layer.groups) * kh * kw


def model_macs(model: DigitCNN) -> list[tuple[str, int]]:
    """Per-layer multiply–adds of DigitCNN for one 28×28 image, from the formulas."""
    rows, size = [], 28
    for layer in [*model.features, *model.classifier]:
        if isinstance(layer, nn.Conv2d):
            size = conv_output_size(size, layer.kernel_size[0], layer.stride[0], layer.padding[0])
            rows.append((f"conv {layer.in_channels}→{layer.out_channels}, {size}×{size} out", conv_macs(layer, size, size)))
        elif isinstance(layer, nn.MaxPool2d):
            size = conv_output_size(size, layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.Linear):
            rows.append((f"linear {layer.in_features}→{layer.out_features}", layer.in_features * layer.out_features))
    return rows


def counted_flops(model: nn.Module, x: torch.Tensor, backward: bool = False) -> int:
    """FLOPs PyTorch's FlopCounterMode records for a forward (and optionally backward) pass."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


per_layer = model_macs(cnn)
forward_macs = sum(m for _, m in per_layer)
for name, macs in per_layer:
    print(f"{name:<32}{macs:>12,} MACs  ({macs / forward_macs:.0%})")
probe = copy.deepcopy(cnn).cpu().float()
one = split.val_x[:1].cpu()
assert counted_flops(probe, one) == 2 * forward_macs
first_layer = per_layer[0][1]
assert counted_flops(probe, one, backward=True) == 2 * (3 * forward_macs - first_layer)
print(f"✓ forward: {2 * forward_macs / 1e6:.2f} MFLOPs per image (formula = FlopCounterMode); "
      f"training step: {2 * (3 * forward_macs - first_layer) / 1e6:.2f} MFLOPs per image (≈ 3×)")

with torch.no_grad():
    cnn.eval()
    batch = split.val_x[:500]
    cnn(batch[:100])  # warm-up
    lib.synchronize(device)  # CUDA and MPS run asynchronously: wait before starting the clock ...
    started = time.perf_counter()
    cnn(batch)
    lib.synchronize(device)  # ... and before reading it
    elapsed = time.perf_counter() - started
print(f"inference: {len(batch) / elapsed:,.0f} images/s on {device.type} "
      f"({2 * forward_macs * len(batch) / elapsed / 1e9:.1f} GFLOP/s achieved)")

# %% [markdown]
# The cost grows with image area and with channel width squared. The same two blocks on a 224×224 photo cost
# $(224/28)^2 = 64$ times more per conv layer; ResNet-50, a standard industrial backbone, needs about 4 billion
# multiply–adds per 224×224 image (the cell below prints how many of our digit CNNs that is). One industrial answer is the
# **depthwise-separable convolution (深度可分离卷积)** of MobileNet: a per-channel $K\times K$ convolution
# ($G = C_{in}$) followed by a 1×1 convolution that mixes channels. Its cost relative to a full convolution is
# $1/C_{out} + 1/K^2$, which we check with the counter on our second layer's shape:

# %%
c1, c2 = S["channels"]
full_conv = nn.Conv2d(c1, c2, 3, padding=1)
separable = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1, groups=c1), nn.Conv2d(c1, c2, 1))
maps14 = cnn.features[:4](split.val_x[:1]).detach().float().cpu()  # the real input of our second conv layer
ratio = counted_flops(separable, maps14) / counted_flops(full_conv, maps14)
lib.close(ratio, 1 / c2 + 1 / 9, "depthwise-separable / full convolution FLOPs = 1/C_out + 1/K²")
assert count(separable) < count(full_conv)
print(f"{count(full_conv):,} → {count(separable):,} parameters, {1 / ratio:.1f}× fewer FLOPs")
print(f"ResNet-50 (about 4.1e9 MACs per 224×224 image) costs as much as {4.1e9 / forward_macs:,.0f} of our digit CNNs")

# %% [markdown]
# **Other limits worth knowing.**
# * **Shortcut learning and bias.** A CNN learns whatever separates the labels in the training data: hospital
#   markers on X-rays, watermarks, backgrounds. It can score well on a test set drawn the same way and fail on a
#   new hospital or camera (**distribution shift, 分布偏移**).
# * **Interpretability.** Feature maps (section 6) and saliency maps (gradients of a class score with respect to
#   the pixels) hint at what a network uses, but do not prove it; regulated uses (medicine, credit) need more.
# * **Global context.** A convolution sees only its receptive field; relating distant parts of an image needs many
#   layers. Attention (chapter 08) relates every position to every other in one layer, which is why vision
#   transformers now compete with CNNs when data and compute are plentiful.

# %% [markdown]
# ## 9 · Exercises
#
# **Exercise 1: output size.** Write `my_output_size(size, kernel, stride, padding, dilation)` for one axis of a
# convolution. The test compares it with what `F.conv2d` produces over a grid of settings.

# %%
def test_output_size(fn: Callable[..., int]) -> None:
    for size, k, s, p, d in itertools.product((7, 28, 32), (1, 3, 4, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        if d * (k - 1) + 1 > size + 2 * p:
            continue
        expected = torch_output_size(size, k, s, p, d)
        got = fn(size, k, s, p, d)
        assert got == expected, (f"size={size}, kernel={k}, stride={s}, padding={p}, dilation={d}: "
                                 f"you gave {got}, F.conv2d gives {expected}")


def my_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_output_size(my_output_size), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


lib.self_check(lambda: test_output_size(solution_output_size), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_output_size(lambda n, k, s, p, d: (n + 2 * p - k) // s + 1),
                      "a formula that ignores dilation")
lib.check.must_reject(lambda: test_output_size(lambda n, k, s, p, d: math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1),
                      "rounding up instead of down")

# %% [markdown]
# **Exercise 2: 2×2 max pooling with a reshape.** Write `my_max_pool_2x2(x)` for $(N, C, H, W)$ tensors using
# only `reshape` and `amax` (no `unfold`, no `F.max_pool2d`). Like PyTorch, drop a last odd row or column. The test
# uses real digits and feature maps, including an odd size. Hint: view each axis of length $2m$ as $(m, 2)$.

# %%
def test_max_pool(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    for x in (digits[:8], feature_maps[:4], feature_maps[:4, :, :27, :25]):
        lib.close(fn(x), F.max_pool2d(x, 2), f"2×2 max pooling of shape {tuple(x.shape)}", quiet=True)


def my_max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_max_pool(my_max_pool_2x2), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]  # drop an odd last row/column
    return x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


lib.self_check(lambda: test_max_pool(solution_max_pool_2x2), "Exercise 2 (solution)", strict=True)


def pool_split_wrong_way(x: torch.Tensor) -> torch.Tensor:
    """A plausible mistake: each axis viewed as (2, m) instead of (m, 2), which pairs pixels m apart."""
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, 2, h // 2, 2, w // 2).amax(dim=(2, 4))


lib.check.must_reject(lambda: test_max_pool(pool_split_wrong_way), "axes viewed as (2, m) instead of (m, 2)")
lib.check.must_reject(lambda: test_max_pool(lambda x: F.avg_pool2d(x, 2)), "average instead of max pooling")

# %% [markdown]
# **Exercise 3: design a kernel.** Return a 3×3 kernel that detects **horizontal** edges: a change from dark above
# to bright below (a step from 0 to 1) gives a positive response of at least 0.5 and never a negative one, flat
# regions give zero, and vertical edges give zero. The kernel is used as in section 3 (not flipped). The test
# applies it to a flat patch, a horizontal step and a vertical step, away from the zero-padded border.

# %%
def test_edge_kernel(fn: Callable[[], torch.Tensor]) -> None:
    k = torch.as_tensor(fn()).float()
    assert k.shape == (3, 3), f"the kernel must be 3×3, got {tuple(k.shape)}"
    step_down = torch.zeros(9, 9)
    step_down[5:] = 1.0  # dark above, bright below: a horizontal edge
    step_right = step_down.T.contiguous()  # a vertical edge
    flat = torch.full((9, 9), 0.7)
    inside = (slice(1, -1), slice(1, -1))  # positions whose 3×3 window does not touch the padding
    assert apply_kernel(flat, k)[inside].abs().max() < 1e-5, "flat regions must give zero (weights summing to 0)"
    assert apply_kernel(step_right, k)[inside].abs().max() < 1e-5, "vertical edges must give zero"
    response = apply_kernel(step_down, k)[inside]
    assert response.min() > -1e-5, (f"dark-to-bright gives a negative response ({response.min():.2f}) somewhere: "
                                    "is the kernel upside down, or does it respond to lines rather than edges?")
    assert response.max() >= 0.5, f"dark-to-bright must give at least 0.5, the largest response is {response.max():.2f}"


def my_horizontal_edge_kernel() -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_edge_kernel(my_horizontal_edge_kernel), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_horizontal_edge_kernel() -> torch.Tensor:
    return KERNELS["Sobel y (horizontal edges)"]  # [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]


lib.self_check(lambda: test_edge_kernel(solution_horizontal_edge_kernel), "Exercise 3 (solution)", strict=True)
# Every kernel with the stated property passes: Prewitt, and two-tap differences in any column or row pair.
for rows in ([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], [[0, -1, 0], [0, 1, 0], [0, 0, 0]],
             [[0, 0, 0], [0, -1, 0], [0, 1, 0]], [[0, -1, 0], [0, 0, 0], [0, 1, 0]], [[0, 0, 0], [-1, 0, 0], [1, 0, 0]]):
    test_edge_kernel(lambda rows=rows: kernel_tensor(rows))
wrong = {"Sobel x (it responds to vertical edges)": KERNELS["Sobel x (vertical edges)"],
         "Sobel y upside down (bright-to-dark)": -KERNELS["Sobel y (horizontal edges)"],
         "the Laplacian (all edges)": KERNELS["Laplacian (all edges)"],
         "a vertical second difference (a line detector)": kernel_tensor([[0, 1, 0], [0, -2, 0], [0, 1, 0]]),
         "a difference that does not sum to zero": kernel_tensor([[0, 0, 0], [0, 0, 0], [0, 1, 0]]),
         "a correct direction but too weak": KERNELS["Sobel y (horizontal edges)"] / 10}
for name, k in wrong.items():
    lib.check.must_reject(lambda k=k: test_edge_kernel(lambda: k), name)

# %% [markdown]
# **Exercise 4: FGSM with a target.** Write `my_targeted_fgsm(model, x, target, epsilon)`: one FGSM step that makes
# the model *more* likely to predict `target` (hint: which way should the step go for the loss with respect to the
# target?). Pixels must stay in $[0, 1]$ and move by at most $\varepsilon$. The test asks it to turn validation digits
# into 3s with ε = 0.2; it checks that the target's loss falls and its probability rises, that more digits read as 3,
# and that every pixel moved by ε in the direction that lowers the target's loss (plain FGSM, which only pushes away
# from the true label, does not pass).

# %%
def test_targeted(fn: Callable[..., torch.Tensor]) -> None:
    cnn.eval()
    x, y = split.val_x[:200], split.val_y[:200]
    x = x[y != 3]
    target = torch.full((len(x),), 3, device=x.device)
    out = fn(cnn, x, target, 0.2).detach()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, "keep pixels in [0, 1]"
    assert (out - x).abs().max() <= 0.2 + 1e-6, "no pixel may move by more than epsilon"
    x_grad = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(cnn(x_grad), target, reduction="sum"), x_grad)
    expected = (x - 0.2 * grad.sign()).clamp(0, 1)
    clear = grad.abs() > 1e-4 * grad.abs().amax(dim=(1, 2, 3), keepdim=True)  # sign not decided by rounding
    agree = ((out - expected).abs() < 1e-5)[clear].float().mean().item()
    assert agree > 0.99, (f"only {agree:.1%} of pixels moved by exactly ε in the direction that lowers the loss "
                          "with respect to the target (the sign of its gradient decides each pixel's direction)")
    with torch.no_grad():
        loss_before, loss_after = F.cross_entropy(cnn(x), target), F.cross_entropy(cnn(out), target)
        p_before, p_after = cnn(x).softmax(1)[:, 3].mean(), cnn(out).softmax(1)[:, 3].mean()
    assert loss_after < loss_before, f"the loss w.r.t. the target rose ({loss_before:.2f} → {loss_after:.2f})"
    assert p_after > p_before, f"the target's probability fell ({p_before:.3f} → {p_after:.3f})"
    before = (lib.predict(cnn, x).argmax(1) == 3).float().mean().item()
    after = (lib.predict(cnn, out).argmax(1) == 3).float().mean().item()
    assert after > before + 0.1, f"only {after:.1%} now read as 3 (before: {before:.1%})"


def my_targeted_fgsm(model: nn.Module, x: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_targeted(my_targeted_fgsm), "Exercise 4")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_targeted_fgsm(model: nn.Module, x: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    model.eval()
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), target), x)
    return (x.detach() - epsilon * grad.sign()).clamp(0, 1)  # descend the loss of the target class


def targeted_fgsm_log_probability(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                                  epsilon: float) -> torch.Tensor:
    """The same step written another way: climb the summed log-probability of the target."""
    model.eval()
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        log_p = F.log_softmax(model(x), dim=1).gather(1, target[:, None]).sum()
        log_p.backward()
    return torch.clamp(x.detach() + epsilon * x.grad.sign(), 0, 1)


lib.self_check(lambda: test_targeted(solution_targeted_fgsm), "Exercise 4 (solution)", strict=True)
lib.self_check(lambda: test_targeted(targeted_fgsm_log_probability), "Exercise 4 (log-probability form)", strict=True)
lib.check.must_reject(lambda: test_targeted(lambda m, x, t, e: fgsm(m, x, lib.predict(m, x).argmax(1), e)),
                      "plain (untargeted) FGSM away from the predicted label")
lib.check.must_reject(lambda: test_targeted(lambda m, x, t, e: fgsm(m, x, t, e)),
                      "FGSM that climbs the target's loss (the wrong sign)")

# %% [markdown]
# **Exercise 5 (think).** (a) Section 5.2 found 96.9% of the standard CNN's parameters in the first linear layer.
# Replace flatten + linear by global average pooling (section 4), keeping the 128 hidden units: how many parameters
# remain, and what information does the network lose? (b) Why does stacking two 3×3 convolutions (VGG) beat one 5×5
# convolution with the same receptive field? Count parameters and nonlinearities. (c) The FGSM accuracy drops
# sharply while random noise of the same size does almost nothing. What does that say about how to test a model
# before deploying it?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
pooled_head = count(standard_width) - count(standard_width.classifier[2]) + count(nn.Linear(32, 128))
lib.model_answer(f"""
**(a)** The first linear layer ($1{{,}}568 \\to 128$, {count(standard_width.classifier[2]):,} parameters) becomes
$32 \\to 128$ ({count(nn.Linear(32, 128)):,} parameters), so the standard-width network shrinks from
{count(standard_width):,} to {pooled_head:,} parameters, about {count(standard_width) / pooled_head:.0f}× fewer.
What is lost is *where*: global pooling keeps only how strongly each of the 32 block-2 channels fired on average
over the 7×7 map, so a 6 (loop at the bottom, stroke above) and a 9 (loop at the top, stroke below) can look alike
unless some channel's pattern is itself larger than a loop and sees the arrangement. Networks with global pooling
compensate with more layers and channels, so that the last features already describe whole digit parts; in
return the head treats every position alike and accepts any image size.

**(b)** Two 3×3 layers see a 5×5 window (receptive field $1 + 2 + 2 = 5$) with $2 \\cdot 9 = 18$ weights per
channel pair instead of 25 (28% fewer parameters and multiply–adds), and put a ReLU between them, so the
function they compute is more expressive than one linear 5×5 filter followed by one ReLU.

**(c)** On the test digits, random ±{EPSILON} noise left the accuracy at {noise_accuracy:.1%}, FGSM of the same
size brought it to {fgsm_accuracy:.1%}. Accuracy on held-out data, even with random corruptions, measures the
*average* case; an adversary, or an unlucky shift in the data, picks the *worst* case. Before deployment, test
against deliberate attacks (stronger multi-step ones such as PGD, not only FGSM), against realistic shifts
(new scanners, rotations as in section 8.3, other writers), and keep monitoring inputs after release.
""")

# %% [markdown]
# ## 10 · Summary and FAQ
#
# * A convolution slides a small kernel over every position and every input channel:
#   $Y[o,i,j] = b_o + \sum_{c,u,v} W[o,c,u,v]\,\tilde X[c, Si+u, Sj+v]$. We wrote it as loops and as one matrix
#   product (im2col) and matched `F.conv2d`; deep learning's "convolution" is a cross-correlation.
# * Output size $\lfloor (H+2P-D(K-1)-1)/S\rfloor+1$; receptive field $R_l = R_{l-1}+(K_l-1)D_lJ_{l-1}$; parameters
#   $C_{out}C_{in}K^2/G + C_{out}$, independent of the image size; MACs = parameters' weights × output positions.
# * Convolution is translation equivariant; pooling shrinks maps and adds tolerance to small shifts, not exact
#   invariance, and a flatten + linear head gives each position its own weights. Nothing in the architecture
#   handles rotation or scale: augmentation teaches the range it shows.
# * Batch normalisation standardises each channel with the batch's statistics in training and with running
#   averages in evaluation; forgetting `model.eval()` makes a prediction depend on the rest of its batch.
# * Measure the flatten size with a dummy forward pass (or use global pooling); never hard-code it, and never
#   `view(-1, ...)` a batch.
# * Choose on validation, report on test once. A CNN of about 207,000 parameters (97% of them in one linear layer)
#   trained with augmentation on 3,500 digits reaches about 98% on the 1,000 test digits (standard profile), learns
#   edge-like first-layer filters, and beat the MLP at every training-set size we tried; but a 0.1 FGSM step costs
#   it a large share of its accuracy, and it does not handle rotations or shifts beyond those it was shown.
#
# **FAQ.**
# *Why 3×3 kernels almost everywhere?* Two stacked 3×3 layers see 5×5 pixels with 18 instead of 25 weights per
# channel pair and an extra nonlinearity; depth is cheaper than width of kernel.
# *Does the CNN need the digits centred?* Convolution is shift-equivariant, but the fully connected head is not,
# and pooling only tolerates small shifts; augmentation with shifts (section 5.3) or global pooling helps.
# *Why `channels_last`?* `lib.prepare_model` stores conv activations as (N, H, W, C), which oneDNN and cuDNN
# process faster; results are identical. It is one more reason to use `flatten(1)`: `view` fails on such tensors.
# *My accuracy differs slightly from the reference.* Thread counts and libraries change the order of floating-point
# sums; bars are set with margin.

# %%
lib.save_results("03_cnn", {
    "test_accuracy": test_accuracy,
    "fgsm_accuracy": fgsm_accuracy,
    "noise_accuracy": noise_accuracy,
    "forward_mflops": 2 * forward_macs / 1e6,
    "number_reading_accuracy": string_accuracy,
})
