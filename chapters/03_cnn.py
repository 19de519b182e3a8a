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
# 5. Train a CNN on real digits to at least 97% test accuracy (standard profile; 99.2% on full MNIST).
# 6. Look inside: learned filters, feature maps, confident mistakes, confusion matrix.
# 7. Measure the limits: data hunger, adversarial examples (FGSM), compute per image.
#
# **Time:** quick ≈ 30 s · standard ≈ 1–2 min on an idle 2-core laptop · full (GPU, full MNIST) ≈ 3 min.

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
# five-digit numbers the document reader reads.

# %%
SETTINGS = {
    "quick": dict(epochs=3, channels=(16, 32), batch_size=64, hunger_sizes=[100, 1000], hunger_steps=80, strips=50),
    "standard": dict(epochs=10, channels=(16, 32), batch_size=64, hunger_sizes=[100, 250, 500, 1000, 2000, 4000],
                     hunger_steps=200, strips=200),
    "full": dict(epochs=15, channels=(32, 64), batch_size=128,
                 hunger_sizes=[100, 300, 1000, 3000, 10000, 30000, 60000], hunger_steps=1500, strips=1000),
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
# scikit-learn (the Summer Palace in Beijing).

# %%
split = lib.load_digits().to(device)
print(split)
photo = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32).permute(2, 0, 1) / 255  # (3, H, W)
gray = (0.299 * photo[0] + 0.587 * photo[1] + 0.114 * photo[2])  # luminance, (H, W)
print(f"photo: {tuple(photo.shape)} RGB in [0, 1]; gray version {tuple(gray.shape)}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1.6, 2]})
axes[0].imshow(photo.permute(1, 2, 0))
axes[0].set_title("china.jpg (scikit-learn sample)")
digits_row = split.test_x[:8, 0].cpu().permute(1, 0, 2).reshape(28, -1)
axes[1].imshow(digits_row, cmap="gray")
axes[1].set_title("test digits: " + " ".join(str(int(c)) for c in split.test_y[:8]))
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


digits = split.test_x[:64].cpu()
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
# *depthwise* convolution, used by MobileNet); a batch-normalisation layer learns a scale and a shift per channel:
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
# The first layer of a trained CNN learns kernels much like these (section 5).

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
# The model is small and classic: two blocks of convolution → **batch normalisation (批归一化)** → ReLU → 2×2
# max pooling, then dropout and two fully connected layers. Batch normalisation rescales each channel to zero
# mean and unit variance over the batch (then learns its own scale and shift), which makes training faster and
# less sensitive to the learning rate. The flatten size is measured with the dummy forward pass of section 4.
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


torch.manual_seed(0)
cnn = lib.prepare_model(DigitCNN(S["channels"]), device)
assert count(cnn) == digit_cnn_param_count(*S["channels"])
print(cnn)
print(f"parameters: {count(cnn):,} (formula agrees); chapter 02's MLP had about 670,000")

# %% [markdown]
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
# Training uses AdamW with a one-cycle learning-rate schedule, and `lib.fit` for the loop (progress bar,
# live curves, test accuracy after each epoch, checkpoint per epoch: interrupt and re-run to resume).

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
    evaluate=lambda: {"test_accuracy": lib.accuracy(cnn, split.test_x, split.test_y)},
    checkpoint=lib.checkpoint_path("03_cnn", "cnn", epochs=S["epochs"], channels=S["channels"],
                                   batch_size=S["batch_size"]),
    state={"model": cnn, "optimizer": optimizer, "schedule": schedule},
)
test_accuracy = history.last("test_accuracy")
bar = lib.pick(BARS)
if lib.get_profile() == "full" and len(split.test_y) < 10_000:  # full MNIST could not be downloaded
    bar = BARS["standard"]
    print("full profile on the offline subset: using the standard bar")
print(f"test accuracy on {len(split.test_y):,} held-out digits: {test_accuracy:.4f} (bar {bar})")
assert test_accuracy >= bar, f"test accuracy {test_accuracy:.4f} is below the bar {bar}"

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
# Pick a test digit and a block. Block 1 maps (14×14) still look like the digit, filtered; block 2 maps (7×7)
# are coarser and respond to parts (a loop, an end point, a crossing). Bright = strong activation.

# %%
BLOCKS = {"block 1 (14×14)": 4, "block 2 (7×7)": 8}  # how many layers of cnn.features to run
test_probs = lib.predict(cnn, split.test_x).softmax(1).cpu()
test_pred = test_probs.argmax(1)
test_y = split.test_y.cpu()


@torch.no_grad()
def activations(index: int, block: str) -> torch.Tensor:
    """Feature maps (C, H, W) of test digit `index` after the given block."""
    cnn.eval()
    return cnn.features[: BLOCKS[block]](split.test_x[index : index + 1]).float().cpu()[0]


def draw_feature_maps(index: int, block: str) -> plt.Figure:
    maps = activations(index, block)[:16]
    fig, axes = plt.subplots(2, 9, figsize=(12, 3))
    axes[0, 0].imshow(split.test_x[index, 0].cpu(), cmap="gray")
    axes[0, 0].set_title(f"#{index}: label {int(test_y[index])}", fontsize=8)
    axes[1, 0].bar(range(10), test_probs[index])
    axes[1, 0].set_title(f"predicted {int(test_pred[index])}", fontsize=8)
    axes[1, 0].set_xticks(range(0, 10, 3))
    for c, ax in enumerate([a for row in axes for a in row[1:]]):
        ax.imshow(maps[c], cmap="magma", vmin=0)
        ax.set_title(f"ch {c}", fontsize=7)
    for ax in axes.flat:
        if ax is not axes[1, 0]:
            ax.axis("off")
    fig.suptitle(f"{block}: first 16 channels for test digit #{index}", fontsize=10)
    fig.tight_layout()
    return fig


maps_explorer = lib.widgets.Explorer(
    draw_feature_maps,
    index=widgets.IntSlider(value=0, min=0, max=len(test_y) - 1, description="test digit"),
    block=widgets.Dropdown(options=list(BLOCKS), value="block 1 (14×14)", description="layer"),
)
maps_explorer

# %% [markdown]
# Test the widget: move to a misclassified digit, switch to block 2, and check that what is drawn is exactly the
# network's feature map and prediction.

# %%
wrong_idx = torch.nonzero(test_pred != test_y).flatten()
target = int(wrong_idx[0]) if len(wrong_idx) else 1
maps_explorer.controls["index"].value = target
maps_explorer.controls["block"].value = "block 2 (7×7)"
drawn = torch.tensor(maps_explorer.figure.axes[1].images[0].get_array().data)  # channel 0 of the chosen block
lib.close(drawn, activations(target, "block 2 (7×7)")[0], f"widget shows block 2, channel 0 of digit #{target}")
assert drawn.shape == (7, 7) and maps_explorer.figure.axes[9].get_title() == f"predicted {int(test_pred[target])}"

# %% [markdown]
# ### Confusion matrix and the most confident mistakes
#
# The **confusion matrix (混淆矩阵)** counts, for each true digit (row), what the network predicted (column).
# Below it: the wrong predictions the network was *most sure of*. Some are genuinely ambiguous handwriting, a few
# look like labelling errors; both are worth knowing about before trusting a model.

# %%
matrix = lib.viz.confusion_matrix(test_pred, test_y, 10)
assert matrix.sum() == len(test_y) and matrix.trace() == (test_pred == test_y).sum()
lib.viz.plot_confusion(matrix, split.classes)
plt.show()
off_diagonal = matrix - torch.diag(matrix.diag())
worst = divmod(int(off_diagonal.argmax()), 10)
print(f"most frequent confusion: true {worst[0]} predicted as {worst[1]} ({int(off_diagonal.max())} times)")

# %%
confidence = test_probs.max(1).values
mistakes = wrong_idx[confidence[wrong_idx].argsort(descending=True)][:12]
lib.image_grid(split.test_x[mistakes.to(device)],
               [f"{int(test_y[i])}→{int(test_pred[i])} ({confidence[i]:.2f})" for i in mistakes], columns=12)
plt.show()
assert all(test_pred[i] != test_y[i] for i in mistakes)
assert len(mistakes) == 0 or confidence[mistakes[0]] == confidence[wrong_idx].max()

# %% [markdown]
# ## 7 · Applications in industry
#
# * **Recognition.** Image classification and face recognition (photo libraries, phone unlock, access control);
#   object detection (YOLO, Faster R-CNN) in driver assistance, retail shelf monitoring and traffic cameras all
#   use a CNN backbone that turns pixels into feature maps.
# * **Inspection.** Cameras on production lines check welds, circuit boards, bottles, textiles and steel surfaces
#   for defects faster and more consistently than people; many systems compare each part with a reference.
# * **Medical imaging (医学影像).** CNNs screen retinal photos for diabetic retinopathy, flag findings on chest
#   X-rays and CT, and segment tumours (U-Net); they assist, and are regulated as medical devices.
# * **Document reading.** LeCun's LeNet read handwritten cheque amounts and postcodes in the 1990s; today's optical
#   character recognition (**OCR, 光学字符识别**) reads invoices, forms, ID cards and receipts.
# * Inside large models: the vision encoders of multimodal models began as CNNs and today are often vision
#   transformers that keep the convolutional "patch embedding" as their first layer (chapter 08).
#
# Two runnable demonstrations follow: a document reader built on the trained digit CNN, and an inspection camera
# built from a single convolution on the photo.
#
# ### 7.1 Document reading: five-digit numbers
#
# A reader for handwritten numbers (postcodes, amounts) is a pipeline: **segment** the strip into characters at
# blank columns, **normalise** each one the way MNIST was made (fit into 20×20 pixels, centre the centre of mass in
# a 28×28 frame), and **classify** it with the CNN. The strips are made of held-out test digits written next to
# each other with small gaps. A number is read correctly only if *all five* digits are; if digit errors were
# independent, that happens with probability $p^5$.

# %%
def make_strip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Write digit images (k, 28, 28) side by side, each trimmed to its ink, with 2–6 blank columns between."""
    pieces = [torch.zeros(28, 4)]
    for image in images:
        ink = torch.nonzero(image.sum(0) > 0).flatten()
        pieces += [image[:, ink.min() : ink.max() + 1], torch.zeros(28, int(torch.randint(2, 7, (1,), generator=generator)))]
    return torch.cat(pieces, dim=1)


def segment(strip: torch.Tensor, min_ink: float = 5.0) -> list[torch.Tensor]:
    """Cut a strip at blank columns; return the pieces trimmed to their ink.

    A single blank column between inked ones does not split (pen strokes have small breaks), and pieces with
    less than `min_ink` total ink are dropped as specks.
    """
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
    scale = 20 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(piece[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    canvas = torch.zeros(28, 28)
    top, left = (28 - size[0]) // 2, (28 - size[1]) // 2
    canvas[top : top + size[0], left : left + size[1]] = small.clamp(0, 1)
    grid = torch.arange(28.0)
    mass = canvas.sum()
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


order = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))
groups = order[: (len(order) // 5) * 5].view(-1, 5)[: S["strips"]]
strip_rng = torch.Generator().manual_seed(0)
strips = [make_strip(split.test_x[g.to(device), 0].cpu(), strip_rng) for g in groups]
truths = ["".join(str(int(test_y[i])) for i in g) for g in groups]
readings = [read_number(s) for s in strips]
segmented = sum(len(r) == 5 for r in readings) / len(readings)
digit_reading = sum(sum(a == b for a, b in zip(r, t, strict=False)) if len(r) == 5 else 0
                    for r, t in zip(readings, truths, strict=True)) / (5 * len(truths))
string_accuracy = sum(r == t for r, t in zip(readings, truths, strict=True)) / len(truths)
print(f"{len(strips)} strips: cut into 5 pieces {segmented:.1%}, digits read correctly {digit_reading:.1%}, "
      f"whole numbers read correctly {string_accuracy:.1%}\n(with the CNN's per-digit test accuracy p = {test_accuracy:.3f}"
      f" and independent errors, p^5 = {test_accuracy**5:.1%})")
assert segmented >= 0.9 and digit_reading >= test_accuracy - 0.05, "the reading pipeline loses too many digits"

fig, axes = plt.subplots(4, 1, figsize=(7, 4.2))
for ax, s, r, t in zip(axes, strips, readings, truths, strict=False):
    ax.imshow(s, cmap="gray")
    ax.set_title(f"read {r}  (true {t}) {'✓' if r == t else '✗'}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# Errors compound in a pipeline: 98% per digit is only about 90% per five-digit number. Real readers add a
# language or checksum model (a postcode must exist, an amount in words must match the amount in figures), and
# must handle touching digits, which blank-column segmentation cannot split.
#
# ### 7.2 Inspection: find a part, notice a defect
#
# An inspection camera must find a reference part in each new shot (lighting and position change) and flag it if
# it does not look right. **Template matching (模板匹配)** does both with one convolution: slide the reference
# patch $T$ over the image and compute the **normalised cross-correlation** at each position,
#
# $$ \mathrm{NCC}(i,j) = \frac{\sum_{u,v} (P_{ij}[u,v]-\bar P_{ij})(T[u,v]-\bar T)}
#    {\sqrt{\sum_{u,v}(P_{ij}[u,v]-\bar P_{ij})^2}\;\sqrt{\sum_{u,v}(T[u,v]-\bar T)^2}} \in [-1, 1], $$
#
# where $P_{ij}$ is the image window at $(i, j)$. Subtracting means and dividing by norms makes it ignore brightness
# and contrast changes. The numerator is one `F.conv2d` with the zero-mean template (its $\bar P$ term vanishes because
# the template sums to zero); the window sums in the denominator are convolutions with an all-ones kernel, which an
# **integral image** (cumulative sums, the trick behind the Viola–Jones face detector) computes in $O(1)$ per
# window. The "new shot" is the photo moved, darkened, with lower contrast and slightly blurred; the reference is the
# top of the pagoda from the original.

# %%
def window_sums(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sum of every h×w window of a 2-D tensor (an all-ones convolution), via an integral image in float64."""
    integral = F.pad(x.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    return integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]


def ncc_map(image: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of `template` at every valid position of `image` (2-D tensors)."""
    t = template - template.mean()
    h, w = template.shape
    numerator = F.conv2d(image[None, None], t[None, None])[0, 0].double()
    window_var = window_sums(image**2, h, w) - window_sums(image, h, w) ** 2 / t.numel()  # Σ (P - P̄)²
    return (numerator / (window_var.clamp(min=1e-12).sqrt() * t.double().norm())).float()


reference = F.avg_pool2d(gray[None, None], 2)[0, 0]  # the inspection camera's resolution: 320×213
top, left, size = 10, 85, 32
template = reference[top : top + size, left : left + size]  # the top of the pagoda
view = (4, 15)  # the camera now looks 4 pixels lower and 15 pixels further right
scene = 0.25 + 0.55 * reference[view[0] : view[0] + 200, view[1] : view[1] + 290]  # darker, lower contrast
scene = apply_kernel(scene, torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 2, 1])) / 16)  # out of focus
truth = (top - view[0], left - view[1])  # where the part should be found
scores = ncc_map(scene, template)

for i, j in [(2, 3), (60, 150), truth]:  # the formula, term by term (in float64), at 3 positions
    p, t = scene[i : i + size, j : j + size].double(), template.double()
    direct = ((p - p.mean()) * (t - t.mean())).sum() / ((p - p.mean()).norm() * (t - t.mean()).norm())
    lib.close(scores[i, j], direct, f"NCC via convolutions at ({i}, {j}) = the formula", atol=1e-3)
found = divmod(int(scores.argmax()), scores.shape[1])
plain = F.conv2d(scene[None, None], template[None, None])[0, 0]
plain_found = divmod(int(plain.argmax()), plain.shape[1])
print(f"✓ NCC = formula; part found at {found} (true {truth}), score {scores.max():.3f}; "
      f"plain correlation would pick {plain_found}")
assert found == truth and scores.max() > 0.9

scratched = scene.clone()
rows = torch.arange(found[0] + 5, found[0] + 27)
scratched[rows, found[1] + (rows - found[0])] = 0.05  # a thin dark diagonal scratch across the part
defect_score = ncc_map(scratched[found[0] : found[0] + size, found[1] : found[1] + size], template)[0, 0].item()
THRESHOLD = 0.9
print(f"good part: score {scores[found]:.3f} → {'PASS' if scores[found] > THRESHOLD else 'FAIL'}; "
      f"scratched part: score {defect_score:.3f} → {'PASS' if defect_score > THRESHOLD else 'FAIL'}")
assert scores[found] > THRESHOLD > defect_score

fig, axes = plt.subplots(1, 4, figsize=(13, 3), gridspec_kw={"width_ratios": [0.6, 1.5, 1.5, 0.6]})
axes[0].imshow(template, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("reference part", fontsize=9)
axes[1].imshow(scene, cmap="gray", vmin=0, vmax=1)
axes[1].add_patch(plt.Rectangle((found[1], found[0]), size, size, fill=False, color="lime", lw=2))
axes[1].set_title("new shot: moved, darker, blurred", fontsize=9)
axes[2].imshow(scores, cmap="viridis")
axes[2].set_title(f"NCC map (peak {scores.max():.2f})", fontsize=9)
axes[3].imshow(scratched[found[0] : found[0] + size, found[1] : found[1] + size], cmap="gray", vmin=0, vmax=1)
axes[3].set_title(f"scratched part: NCC {defect_score:.2f}", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 8 · Challenges and limits
#
# ### 8.1 Data hunger
#
# How much labelled data does a CNN need? We train the same small CNN (without augmentation) and, for comparison,
# an MLP on growing subsets of the training digits, each for the same number of updates (learning rate decayed linearly to zero), and test on the same
# held-out digits. Labelled data is the expensive part of most industrial projects (a radiologist's time, a
# defect that occurs once in ten thousand parts).

# %%
def train_on_subset(make_model: Callable[[], nn.Module], n: int, steps: int, seed: int = 0) -> float:
    """Train a fresh model on the first n training digits for `steps` Adam updates; return test accuracy."""
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
    return lib.accuracy(model, split.test_x, split.test_y)


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


sizes = [n for n in S["hunger_sizes"] if n <= len(split.train_y)]
hunger = {"CNN": [], "MLP": []}
for n in sizes:
    hunger["CNN"].append(train_on_subset(lambda: DigitCNN((8, 16), hidden=64, dropout=0.0), n, S["hunger_steps"]))
    hunger["MLP"].append(train_on_subset(small_mlp, n, S["hunger_steps"]))
    print(f"{n:>6} training digits: CNN {hunger['CNN'][-1]:.3f}, MLP {hunger['MLP'][-1]:.3f}")

fig = lib.viz.plot_curves({k: (sizes, v) for k, v in hunger.items()}, "training digits (log scale)", "test accuracy",
                          title=f"accuracy vs training-set size ({S['hunger_steps']} updates each)")
fig.axes[0].set_xscale("log")
plt.show()
assert hunger["CNN"][-1] > hunger["CNN"][0] + 0.05, "more data should help the CNN"
assert sum(hunger["CNN"]) > sum(hunger["MLP"]), "the CNN should make better use of the same data"

# %% [markdown]
# Accuracy grows roughly linearly in the *logarithm* of the data: every doubling buys a smaller gain. The CNN's
# built-in assumptions (locality, weight sharing) make it more data-efficient than the MLP, and augmentation
# (section 5) stretches the data further. The industrial remedies are **transfer learning (迁移学习)**: start
# from a network pretrained on millions of images and fine-tune it on a few hundred, and self-supervised
# pretraining on unlabelled images; that is the road that led to today's large vision models.
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
# float64, with a tiny $\varepsilon$ so that first order is accurate), then attack the trained CNN with
# $\varepsilon = 0.1$, a tenth of the pixel range.

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


def accuracy_under(attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch: int = 1000) -> float:
    """Test accuracy of the CNN on attacked test digits (attack(x, y) → perturbed x)."""
    correct = 0
    for i in range(0, len(split.test_y), batch):
        x, y = split.test_x[i : i + batch], split.test_y[i : i + batch]
        correct += (lib.predict(cnn, attack(x, y)).argmax(1) == y).sum().item()
    return correct / len(split.test_y)


def random_sign_noise(x: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """Random ±epsilon per pixel: the same size of change as FGSM, in a random direction."""
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device) * 2 - 1
    return (x + epsilon * signs).clamp(0, 1)


adversarial = fgsm(cnn, split.test_x[:16], split.test_y[:16], EPSILON)
assert (adversarial - split.test_x[:16]).abs().max() <= EPSILON + 1e-6 and adversarial.min() >= 0
epsilons = [0.0, 0.05, 0.1, 0.2, 0.3]
noise_rng = torch.Generator().manual_seed(0)
fgsm_curve = [accuracy_under(lambda x, y, e=e: fgsm(cnn, x, y, e) if e else x) for e in epsilons]
noise_curve = [accuracy_under(lambda x, y, e=e: random_sign_noise(x, e, noise_rng)) for e in epsilons]
fgsm_accuracy = fgsm_curve[epsilons.index(EPSILON)]
noise_accuracy = noise_curve[epsilons.index(EPSILON)]
print(f"clean accuracy {fgsm_curve[0]:.3f} | random ±{EPSILON} noise {noise_accuracy:.3f} | "
      f"FGSM ε={EPSILON}: {fgsm_accuracy:.3f}")
assert abs(fgsm_curve[0] - test_accuracy) < 1e-6
assert fgsm_accuracy < noise_accuracy - 0.05 and noise_accuracy > test_accuracy - 0.05

fig = lib.viz.plot_curves({"FGSM attack": (epsilons, fgsm_curve), "random ±ε noise": (epsilons, noise_curve)},
                          "ε (largest change per pixel)", "test accuracy", title="same-sized changes, different effect")
plt.show()
shown = split.test_x[:8]
attacked = fgsm(cnn, shown, split.test_y[:8], EPSILON)
before, after = lib.predict(cnn, shown).argmax(1), lib.predict(cnn, attacked).argmax(1)
lib.image_grid(torch.cat([shown, attacked]), [f"clean: {int(p)}" for p in before] + [f"FGSM: {int(p)}" for p in after],
               columns=8)
plt.show()

# %% [markdown]
# The same change in random directions barely matters; aimed along the gradient sign it breaks the network. The
# reason is linearity in high dimension: the loss change is a sum over 784 pixels of $\varepsilon\,|g_i|$, which
# adds up, while random signs cancel. Defences exist (adversarial training: train on FGSM or PGD examples;
# certified defences), all at a cost in clean accuracy or compute; the problem is open for every vision system,
# large or small, and matters wherever someone gains from fooling it (spam filters, content moderation, road-sign
# recognition).
#
# ### 8.3 Invariance is built in only for translation
#
# Convolution shares weights across *positions*, not across rotations or scales. The network saw rotations of
# at most ±10° in training; rotate the test digits further and accuracy falls (a rotated 6 *is* a 9, so some of
# this is correct behaviour).

# %%
angles = [0, 10, 20, 30, 45, 60, 90]
n_test = len(split.test_y)
rotation_curve = [accuracy_under(lambda x, y, a=a: affine(x, torch.full((len(x),), float(a)), torch.ones(len(x)),
                                                          torch.zeros(len(x), 2))) for a in angles]
print("accuracy vs rotation:", {f"{a}°": round(acc, 3) for a, acc in zip(angles, rotation_curve, strict=True)})
assert rotation_curve[-1] < rotation_curve[0] - 0.3

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
one = split.test_x[:1].cpu()
assert counted_flops(probe, one) == 2 * forward_macs
first_layer = per_layer[0][1]
assert counted_flops(probe, one, backward=True) == 2 * (3 * forward_macs - first_layer)
print(f"✓ forward: {2 * forward_macs / 1e6:.2f} MFLOPs per image (formula = FlopCounterMode); "
      f"training step: {2 * (3 * forward_macs - first_layer) / 1e6:.2f} MFLOPs per image (≈ 3×)")

with torch.no_grad():
    cnn.eval()
    batch = split.test_x[:1000]
    cnn(batch[:100])  # warm-up
    started = time.perf_counter()
    cnn(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
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
maps14 = cnn.features[:4](split.test_x[:1]).detach().float().cpu()  # the real input of our second conv layer
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

# %% [markdown]
# **Exercise 3: design a kernel.** Return a 3×3 kernel that detects **horizontal** edges (a change from dark above
# to bright below gives a large positive response), gives zero on flat regions, and ignores vertical edges. The test
# applies it to three small patterns: a flat patch, a horizontal step and a vertical step.

# %%
def test_edge_kernel(fn: Callable[[], torch.Tensor]) -> None:
    k = fn().float()
    assert k.shape == (3, 3), f"the kernel must be 3×3, got {tuple(k.shape)}"
    step_down = torch.zeros(9, 9)
    step_down[5:] = 1.0  # dark above, bright below: a horizontal edge
    step_right = step_down.T.contiguous()  # a vertical edge
    flat = torch.full((9, 9), 0.7)
    assert apply_kernel(flat, k)[2:-2, 2:-2].abs().max() < 1e-5, "flat regions must give zero (weights summing to 0)"
    assert apply_kernel(step_down, k)[4:6, 2:-2].min() > 0.5, "dark-to-bright (top to bottom) must give a large +"
    assert apply_kernel(step_right, k)[2:-2, 2:-2].abs().max() < 1e-5, "vertical edges must give zero"


def my_horizontal_edge_kernel() -> torch.Tensor:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_edge_kernel(my_horizontal_edge_kernel), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_horizontal_edge_kernel() -> torch.Tensor:
    return KERNELS["Sobel y (horizontal edges)"]  # [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]; Prewitt works too


lib.self_check(lambda: test_edge_kernel(solution_horizontal_edge_kernel), "Exercise 3 (solution)", strict=True)

# %% [markdown]
# **Exercise 4: FGSM with a target.** Write `my_targeted_fgsm(model, x, target, epsilon)`: one step that makes the
# model *more* likely to predict `target` (hint: which way should the step go for the loss with respect to the
# target?). Pixels must stay in $[0, 1]$ and move by at most $\varepsilon$. The test asks it to turn test digits into
# 3s with ε = 0.2 and expects it to succeed far more often than it happens by chance.

# %%
def test_targeted(fn: Callable[..., torch.Tensor]) -> None:
    x, y = split.test_x[:200], split.test_y[:200]
    keep = y != 3
    x = x[keep]
    target = torch.full((len(x),), 3, device=x.device)
    out = fn(cnn, x, target, 0.2)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, "keep pixels in [0, 1]"
    assert (out - x).abs().max() <= 0.2 + 1e-6, "no pixel may move by more than epsilon"
    before = (lib.predict(cnn, x).argmax(1) == 3).float().mean().item()
    after = (lib.predict(cnn, out).argmax(1) == 3).float().mean().item()
    assert after > before + 0.1, f"only {after:.1%} now read as 3 (before: {before:.1%}); step the other way?"


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


lib.self_check(lambda: test_targeted(solution_targeted_fgsm), "Exercise 4 (solution)", strict=True)

# %% [markdown]
# **Exercise 5 (think).** (a) Our CNN has about 200,000 parameters, 70% of them in the first linear layer. Replace
# flatten + linear by global average pooling (section 4): how many parameters remain, and what information does the
# network lose? (b) Why does stacking two 3×3 convolutions (VGG) beat one 5×5 convolution with the same receptive
# field? Count parameters and nonlinearities. (c) The FGSM accuracy drops sharply while random noise of the same
# size does almost nothing. What does that say about how to test a model before deploying it?
#
# ## 10 · Summary and FAQ
#
# * A convolution slides a small kernel over every position and every input channel:
#   $Y[o,i,j] = b_o + \sum_{c,u,v} W[o,c,u,v]\,\tilde X[c, Si+u, Sj+v]$. We wrote it as loops and as one matrix
#   product (im2col) and matched `F.conv2d`; deep learning's "convolution" is a cross-correlation.
# * Output size $\lfloor (H+2P-D(K-1)-1)/S\rfloor+1$; receptive field $R_l = R_{l-1}+(K_l-1)D_lJ_{l-1}$; parameters
#   $C_{out}C_{in}K^2/G + C_{out}$, independent of the image size; MACs = parameters' weights × output positions.
# * Pooling (max or average) shrinks maps and adds some tolerance to small shifts; convolution itself is
#   translation equivariant.
# * Measure the flatten size with a dummy forward pass (or use global pooling); never hard-code it, and never
#   `view(-1, ...)` a batch.
# * A 200k-parameter CNN with augmentation reaches about 99% on 1,000 held-out digits from 4,000 training digits,
#   learns edge-like first-layer filters, and beat the MLP at every training-set size we tried; but a 0.1 FGSM step
#   costs it a large share of its accuracy, and it does not handle rotations it has not seen.
#
# **FAQ.**
# *Why 3×3 kernels almost everywhere?* Two stacked 3×3 layers see 5×5 pixels with 18 instead of 25 weights per
# channel pair and an extra nonlinearity; depth is cheaper than width of kernel.
# *Does the CNN need the digits centred?* Convolution is shift-equivariant, but the fully connected head is not,
# and pooling only tolerates small shifts; augmentation with shifts (section 5) or global pooling helps.
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
