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
# # 01 · What is a large model, and why does scale matter?
#
# **Goals**
# 1. Say what makes a model an "AI large model" (AI大模型) and how it differs from a traditional model.
# 2. Count a model's parameters, training compute and training memory by formula, and check each count against
#    PyTorch on real modules, from this course's small models up to GPT-3.
# 3. Run a laptop-sized **scaling experiment**: validation error against parameter count and against data size
#    on real digits; fit a power law and check that it predicts a larger run.
# 4. Map where large models are used in industry, and which challenges later chapters take up.
#
# **Time:** quick ≈ 30 s · standard ≈ 1 min · full ≈ 3 min (GPU).

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lib

device = lib.setup(seed=0)

# %%
SETTINGS = {  # the scaling experiment of section 5: MLP widths, training-set sizes, updates per model
    "quick": dict(widths=[8, 16, 32, 64, 128, 256], data_sizes=[125, 250, 500, 1000], steps=300),
    "standard": dict(widths=[8, 16, 32, 64, 128, 256, 512], data_sizes=[250, 500, 1000, 2000, 3500], steps=1500),
    "full": dict(widths=[8, 16, 32, 64, 128, 256, 512, 1024], data_sizes=[500, 2000, 8000, 30000, 55000],
                 steps=4000),
}
S = lib.pick(SETTINGS)
print(lib.get_profile(), S)

# %% [markdown]
# ## 1 · Concepts
#
# An **AI large model (AI大模型)** is a neural network whose size (parameters, training data and training
# compute) is large enough that it is trained once, at great cost, on broad data, and then used for many tasks.
# Three features define it:
#
# * **Parameter scale (参数规模).** Millions for the models in this course, billions to trillions for today's
#   language models. GPT-3 (2020) has 175 billion parameters.
# * **Structure (结构).** Deep stacks of a few well-understood blocks: convolutions (chapter 03), recurrent cells
#   (chapter 04), encoders and decoders (chapters 05–06), generator/discriminator pairs (chapter 07), and above
#   all attention and the transformer (chapter 08), which is what today's large language models are made of.
# * **Ability (能力).** With scale comes generality: one **pre-trained (预训练)** model can be **fine-tuned
#   (微调)** or simply prompted for translation, summarising, coding or question answering; some abilities
#   only appear beyond a certain size (often called **emergent abilities (涌现能力)**).
#
# | | traditional model (传统模型) | large model |
# |---|---|---|
# | size | hand-picked features, thousands to millions of parameters | billions of parameters, features learned |
# | data | one labelled dataset per task | broad, mostly unlabelled data, then small task data |
# | use | one model per task | one foundation model (基础模型), many tasks |
# | cost | a laptop | thousands of accelerators for weeks |
# | failure modes | under-fitting, hand-crafted bias | opacity, data privacy, bias at scale, energy cost |
#
# The five model families of this course are the structure inside large models: a vision model is a deep CNN
# or a vision transformer; speech models stack convolutions with recurrent or attention layers; image generators
# descend from autoencoders, VAEs and GANs (and now diffusion models); language models are transformers. We
# learn each family at a size a laptop can train, and use this chapter's arithmetic to see what changes at scale.

# %% [markdown]
# ## 2 · Counting parameters
#
# A fully connected layer from $n_\text{in}$ to $n_\text{out}$ units has $n_\text{in} n_\text{out} + n_\text{out}$
# parameters (weights and biases); a convolution with $C_\text{in}$ input channels, $C_\text{out}$ filters of size
# $k\times k$ has $C_\text{out}(C_\text{in}k^2 + 1)$. A model's total is the sum over its layers. We check these
# formulas against `numel()` on two of the course's models.

# %%
def linear_params(n_in: int, n_out: int) -> int:
    """Weights plus biases of a fully connected layer."""
    return n_in * n_out + n_out


def conv_params(c_in: int, c_out: int, k: int) -> int:
    """Weights plus biases of a k×k convolution."""
    return c_out * (c_in * k * k + 1)


def numel(model: nn.Module) -> int:
    """Parameter count as PyTorch sees it."""
    return sum(p.numel() for p in model.parameters())


mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
lenet = nn.Sequential(  # LeNet-5 sized CNN, as trained in chapter 03 and the benchmark
    nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
)
mlp_formula = linear_params(784, 512) + linear_params(512, 512) + linear_params(512, 10)
lenet_formula = (conv_params(1, 6, 5) + conv_params(6, 16, 5) + linear_params(400, 120) + linear_params(120, 84)
                 + linear_params(84, 10))
assert mlp_formula == numel(mlp) and lenet_formula == numel(lenet)
print(f"chapter-02 MLP: {mlp_formula:,} parameters · LeNet-5 CNN: {lenet_formula:,} parameters")

# %% [markdown]
# ### A transformer block, and GPT-3
#
# A GPT-style transformer layer of width $d$ has an attention part (query, key, value and output projections:
# $4(d^2 + d)$) and a feed-forward part ($d \to 4d \to d$: $8d^2 + 5d$), plus two layer norms ($4d$). So
#
# $$ N_\text{layer} = 12d^2 + 13d,\qquad N \approx 12\,L\,d^2 \text{ for } L \text{ layers (embeddings aside)}. $$
#
# We check the exact count against a PyTorch transformer layer, then apply it to GPT-3's published shape:
# $L = 96$ layers, $d = 12{,}288$, a vocabulary of 50,257 tokens and a context of 2,048 positions.

# %%
def transformer_layer_params(d: int) -> int:
    """Exact parameter count of one pre-norm GPT layer (attention + 4x MLP + 2 LayerNorms)."""
    return 12 * d * d + 13 * d


def gpt_params(layers: int, d: int, vocab: int, context: int) -> int:
    """Transformer layers, token and position embeddings, final LayerNorm (output head tied to embeddings)."""
    return layers * transformer_layer_params(d) + vocab * d + context * d + 2 * d


layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=256, norm_first=True)
assert numel(layer) == transformer_layer_params(64), (numel(layer), transformer_layer_params(64))
gpt3_parameters = gpt_params(layers=96, d=12288, vocab=50257, context=2048)
print(f"one d=64 layer: {numel(layer):,} parameters (formula agrees)")
print(f"GPT-3 by formula: {gpt3_parameters / 1e9:.1f} billion parameters")
assert abs(gpt3_parameters / 175e9 - 1) < 0.01, "the formula should give GPT-3's published 175B within 1%"

# %% [markdown]
# ## 3 · Training compute: $C \approx 6ND$
#
# A dense layer multiplies each input vector by its weight matrix: one multiply-add, 2 floating-point operations
# (FLOPs), per weight and per vector. The backward pass does two products of the same size, the gradient with
# respect to the input and the gradient with respect to the weights: 4 FLOPs per weight and per vector. In a
# transformer every weight matrix is applied once to every token, so training a model of $N$ parameters on $D$
# tokens costs
#
# $$ C \approx 6\,N\,D \;\text{FLOPs}\qquad(2ND \text{ forward} + 4ND \text{ backward}). $$
#
# The rule counts *uses* of a weight, and it is exact only where each weight is used once per token:
# dense and transformer layers. Embeddings are table look-ups, not products, and attention adds products of
# activations with activations, $12\,T\,d$ FLOPs per token and layer for a context of $T$ tokens (the $QK^\top$ and
# attention × values products, 4$Td$ forward, twice that backward), a few percent for GPT-3. We check the rule by
# counting the FLOPs PyTorch performs for a forward and backward pass (`FlopCounterMode`): on the chapter-02 MLP
# (one "token" = one image) and on a transformer layer.

# %%
def training_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs PyTorch counts for one forward and backward pass (input gradient on, so every layer does all 3
    products)."""
    inputs = inputs.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        model(inputs).float().square().mean().backward()
    return counter.get_total_flops()


batch = 32
mlp_weights = sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear))
mlp_flops = training_flops(mlp, torch.randn(batch, 1, 28, 28))
print(f"MLP: counted {mlp_flops:,} FLOPs = 6 × {mlp_weights:,} weights × {batch} images")
assert mlp_flops == 6 * mlp_weights * batch

context, d = 128, 64  # `layer` is the d = 64 transformer layer of section 2; sequences of 128 tokens
layer_weights = sum(p.numel() for p in layer.parameters() if p.dim() == 2)  # matrices, not biases or norms
layer_flops = training_flops(layer, torch.randn(context, 2, d))  # (tokens, sequences, width)
tokens = context * 2
attention_flops = 12 * context * d * tokens
print(f"transformer layer: counted {layer_flops:,} FLOPs = 6 × {layer_weights:,} weights × {tokens} tokens "
      f"+ attention {attention_flops:,}")
assert layer_flops == 6 * layer_weights * tokens + attention_flops

# %% [markdown]
# **Convolutions break the rule.** A convolution slides each filter over the image: a $k\times k$ filter from
# $C_\text{in}$ to $C_\text{out}$ channels with an $H_\text{out}\times W_\text{out}$ output does
# $C_\text{out} C_\text{in} k^2 \cdot H_\text{out} W_\text{out}$ multiply-adds per image, each weight used
# $H_\text{out} W_\text{out}$ times. The general rule is
#
# $$ C \approx 6 \times (\text{multiply-adds per example}) \times D, $$
#
# which is $6ND$ only when each weight is used once per example. For the LeNet-5 CNN of section 2 we count
# the multiply-adds from the layer shapes, check the count against PyTorch, and see how far off $6ND$ is.

# %%
def conv_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    """Multiply-adds of a k×k convolution per image: every weight once per output position."""
    return c_out * c_in * k * k * h_out * w_out


lenet_macs = (conv_macs(1, 6, 5, 28, 28) + conv_macs(6, 16, 5, 10, 10)  # 28×28 (padding 2), then 14 - 5 + 1
              + 400 * 120 + 120 * 84 + 84 * 10)  # the dense layers: one multiply-add per weight
lenet_flops = training_flops(lenet, torch.randn(batch, 1, 28, 28))
assert lenet_flops == 6 * lenet_macs * batch, (lenet_flops, 6 * lenet_macs * batch)
lenet_ratio = lenet_flops / (6 * numel(lenet) * batch)
print(f"LeNet-5: counted {lenet_flops:,} FLOPs = 6 × {lenet_macs:,} multiply-adds × {batch} images, "
      f"{lenet_ratio:.2f} × the 6ND estimate ({numel(lenet):,} parameters)")
assert round(lenet_ratio, 2) == 6.75

# %% [markdown]
# The two convolutions hold 4% of LeNet's weights but do 86% of its multiply-adds, so $6ND$ undercounts its
# training compute 6.75-fold. For a transformer, the rule holds per token. GPT-3 was trained on about 300
# billion tokens:

# %%
conv_share = (conv_macs(1, 6, 5, 28, 28) + conv_macs(6, 16, 5, 10, 10)) / lenet_macs
conv_weight_share = (conv_params(1, 6, 5) + conv_params(6, 16, 5)) / numel(lenet)
assert round(conv_weight_share, 2) == 0.04 and round(conv_share, 2) == 0.86, (conv_weight_share, conv_share)

gpt3_tokens = 300e9
gpt3_training_flops = 6 * gpt3_parameters * gpt3_tokens
gpt3_attention_share = 12 * 2048 * 12288 * 96 / (6 * gpt3_parameters)  # per token: all layers, full context
print(f"GPT-3 training compute: {gpt3_training_flops:.3g} FLOPs; attention would add {gpt3_attention_share:.1%}")
assert abs(gpt3_training_flops / 3.14e23 - 1) < 0.02, "GPT-3's paper reports 3.14e23 FLOPs"
assert 0.01 < gpt3_attention_share < 0.05, "attention is a few percent of GPT-3's compute"

# %% [markdown]
# How long is that? An accelerator that sustains $R$ FLOP/s needs $C/R$ seconds. At a realistic 40% of an
# A100's 312 TFLOP/s (bf16), that is about 80 GPU-years:

# %%
sustained = 0.4 * 312e12
gpu_years = gpt3_training_flops / sustained / (3600 * 24 * 365)
print(f"{gpu_years:.0f} GPU-years on one A100, or {gpu_years * 365 / 1024:.0f} days on 1,024 of them")
assert round(gpu_years) == 80, "the text above and section 7 say about 80 GPU-years"

# %% [markdown]
# ## 4 · Training memory: 16 bytes per parameter
#
# Training with Adam keeps, for every parameter, the weight, its gradient and Adam's two moving averages $m$ and
# $s$ (chapter 02; the Adam paper calls $s$ $v$). In 32-bit floats that is $4 + 4 + 4 + 4$ bytes. Large models
# are trained in **mixed precision**: 16-bit (fp16 or bf16) weights and gradients for the fast matrix products,
# plus a 32-bit **master copy** of the weights that the optimiser updates (a 16-bit weight cannot hold a tiny
# update) and Adam's $m$ and $s$ in 32 bits:
#
# $$ \underbrace{2}_{\text{16-bit weights}} + \underbrace{2}_{\text{16-bit gradients}}
#    + \underbrace{4}_{\text{fp32 master weights}} + \underbrace{4}_{\text{fp32 } m}
#    + \underbrace{4}_{\text{fp32 } s} = 16 \text{ bytes per parameter,} $$
#
# before counting activations. Mixed precision saves time and activation memory, not training state. We
# measure each part on the MLP after one real Adam step.

# %%
def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3)
F.cross_entropy(mlp(torch.randn(4, 1, 28, 28)), torch.zeros(4, dtype=torch.long)).backward()
optimizer.step()
parameters = list(mlp.parameters())
adam = [optimizer.state[p] for p in parameters]
fp32_bytes = tensor_bytes(parameters) + tensor_bytes(p.grad for p in parameters) + tensor_bytes(
    t for state in adam for t in (state["exp_avg"], state["exp_avg_sq"]))
assert fp32_bytes == 16 * numel(mlp), (fp32_bytes, 16 * numel(mlp))
mixed_parts = {  # what mixed-precision training keeps, measured as bytes per parameter
    "16-bit weights": tensor_bytes(p.detach().half() for p in parameters),
    "16-bit gradients": tensor_bytes(p.grad.half() for p in parameters),
    "fp32 master weights": tensor_bytes(parameters),
    "fp32 m": tensor_bytes(state["exp_avg"] for state in adam),
    "fp32 s": tensor_bytes(state["exp_avg_sq"] for state in adam),
}
per_parameter = {name: size / numel(mlp) for name, size in mixed_parts.items()}
print(" + ".join(f"{v:g} ({name})" for name, v in per_parameter.items()), f"= {sum(per_parameter.values()):g} bytes")
assert list(per_parameter.values()) == [2, 2, 4, 4, 4] and sum(mixed_parts.values()) == fp32_bytes
print(f"MLP: {fp32_bytes / 2**20:.1f} MiB of training state = 16 bytes x {numel(mlp):,} parameters")
gpt3_training_memory_tb = 16 * gpt3_parameters / 1e12
print(f"GPT-3: {gpt3_training_memory_tb:.1f} TB of training state, about {gpt3_training_memory_tb * 1e3 / 80:.0f} "
      "80-GB GPUs just to hold it: why large models need distributed training (chapter 11)")

# %% [markdown]
# ### Widget: a model-size calculator
#
# Move the sliders to size a GPT-style model: parameters, training compute for a given number of tokens
# (the "Chinchilla" rule of thumb is about 20 tokens per parameter), and memory.

# %%
def size_report(layers: int, width: int, tokens_per_param: float) -> dict[str, float]:
    n = gpt_params(layers, width, vocab=50257, context=2048)
    return {"parameters": n, "flops": 6 * n * tokens_per_param * n, "train_bytes": 16 * n, "bf16_bytes": 2 * n}


def draw_size(layers: int, width: int, tokens_per_param: float) -> plt.Figure:
    report = size_report(layers, width, tokens_per_param)
    labels = ["parameters", "training FLOPs", "training memory (bytes)", "inference weights, bf16 (bytes)"]
    values = [report["parameters"], report["flops"], report["train_bytes"], report["bf16_bytes"]]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh(labels, values, color="tab:purple")
    ax.set_xscale("log")
    ax.set_xlim(1e5, 1e26)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2e}", va="center")
    ax.set_title(f"L={layers}, d={width}: {report['parameters'] / 1e9:.2f}B parameters")
    fig.tight_layout()
    return fig


def size_calculator() -> lib.widgets.Explorer:
    """The calculator's sliders wired to `draw_size`, starting at GPT-2 small's shape."""
    return lib.widgets.Explorer(
        draw_size,
        layers=widgets.IntSlider(12, 1, 128, description="layers L"),
        width=widgets.IntSlider(768, 64, 16384, step=64, description="width d"),
        tokens_per_param=lib.widgets.slider(20, 1, 100, 1, "tokens/param"),
    )


calculator = size_calculator()
calculator

# %% [markdown]
# The check below moves the sliders of a fresh calculator (the one above stays where you left it):

# %%
tested = size_calculator()
gpt2_small = gpt_params(12, 768, vocab=50257, context=2048)  # GPT-2 small has ~124M (1,024 positions)
assert tested.figure.axes[0].get_title() == f"L=12, d=768: {gpt2_small / 1e9:.2f}B parameters"
assert abs(gpt2_small / 124e6 - 1) < 0.02
tested.controls["layers"].value = 96
tested.controls["width"].value = 12288
assert tested.figure.axes[0].get_title() == f"L=96, d=12288: {gpt3_parameters / 1e9:.2f}B parameters"

# %% [markdown]
# ## 5 · A scaling experiment on a laptop
#
# Large-model research found that test loss falls as a **power law (幂律)** in parameters $N$ and data $D$,
# $L(N) \approx (N_c/N)^{\alpha_N}$, over many orders of magnitude (Kaplan et al., 2020), as long as the other
# one does not run out: a straight line on log–log axes. Does a tiny version hold on our digits? We train MLPs
# of growing width on the same training digits (a fixed number of updates each), then the width-128 MLP on
# growing slices of the training digits, and record each model's error on the 500 **validation** digits. Fitting
# a law to results and judging it are choices made by looking at results, so they use validation; this chapter
# never reads the test digits.

# %%
split = lib.load_digits().to(device)
FIT_BARS = {  # lowest exponent and R², largest held-out miss of each fit below; each sits past the worst of 5 seeds
    "quick": {"size": dict(exponent=0.03, r2=0.4, miss=0.15), "data": dict(exponent=0.25, r2=0.8, miss=0.4)},
    "standard": {"size": dict(exponent=0.07, r2=0.7, miss=0.15), "data": dict(exponent=0.25, r2=0.85, miss=0.15)},
    "full": {"size": dict(exponent=0.07, r2=0.7, miss=0.15), "data": dict(exponent=0.25, r2=0.85, miss=0.15)},
}


def train_mlp(hidden: int, n_train: int, steps: int, seed: int = 0) -> tuple[float, float]:
    """Train a one-hidden-layer MLP for `steps` updates on the first `n_train` training digits; return its
    (validation error, training error)."""
    torch.manual_seed(seed)
    model = lib.prepare_model(nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)),
                              device)
    x, y = split.train_x[:n_train], split.train_y[:n_train]
    batches = lib.Batches(x, y, batch_size=64, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    lib.fit(lib.supervised_step(model, optimizer), batches, math.ceil(steps / len(batches)),
            live=False, progress=False)
    return 1 - lib.accuracy(model, split.val_x, split.val_y), 1 - lib.accuracy(model, x, y)


def fit_power_law(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares line through (log x, log y): returns (a, alpha) with y ≈ a * x ** -alpha."""
    lx, ly = torch.tensor(x).log(), torch.tensor(y).log()
    slope, intercept = torch.linalg.lstsq(torch.stack([lx, torch.ones_like(lx)], 1), ly.unsqueeze(1)).solution
    return math.exp(intercept.item()), -slope.item()


n_train = len(split.train_y)
data_sizes = [n for n in S["data_sizes"] if n <= n_train]
sizes = [numel(nn.Sequential(nn.Linear(784, w), nn.Linear(w, 10))) for w in S["widths"]]
error_vs_size, train_error_vs_size = zip(*[train_mlp(w, n_train, S["steps"]) for w in S["widths"]], strict=True)
error_vs_data = [train_mlp(128, n, S["steps"])[0] for n in data_sizes]
a_n, scaling_exponent = fit_power_law(sizes, error_vs_size)
a_d, data_exponent = fit_power_law(data_sizes, error_vs_data)
for w, n, e, t in zip(S["widths"], sizes, error_vs_size, train_error_vs_size, strict=True):
    print(f"width {w:4d}: {n:8,} parameters, validation error {e:.3f}, training error {t:.3f}")
for n, e in zip(data_sizes, error_vs_data, strict=True):
    print(f"{n:6,} training digits (width 128): validation error {e:.3f}")
print(f"fitted: error ≈ {a_n:.2f} · N^-{scaling_exponent:.3f}   and   error ≈ {a_d:.2f} · D^-{data_exponent:.3f}")

# %% [markdown]
# ### Is it a power law? Check the fit
#
# A line through a few points always exists; two numbers say whether it describes them.
#
# * **$R^2$**, the share of the spread of $\log(\text{error})$ that the line explains:
#   $R^2 = 1 - \sum_i r_i^2 / \sum_i (\log y_i - \overline{\log y})^2$ with residuals $r_i$ on the log scale.
#   For a least-squares line it equals the squared correlation of $\log x$ and $\log y$ (a check of the code).
# * **A held-out prediction.** Fit the line on all points but the largest, predict the largest one's error, and
#   compare with what was measured. A law that predicts is what makes scaling useful: labs size a large model by
#   extrapolating from small ones before paying for it.
#
# The bars in `FIT_BARS` come from running this experiment with five seeds (0–4). Standard: size exponent
# 0.10–0.17, $R^2$ 0.79–0.93, held-out miss at most 11%; data exponent 0.32–0.35, $R^2$ 0.92–0.98, miss at
# most 9%. Quick has only 1,000 training digits, which even width 16 nearly fits, so its size curve is almost flat
# (exponent 0.05–0.08, $R^2$ 0.53–0.96, miss at most 9%) and its data curve bends a little at the end (miss up
# to 30%). An experiment that learns nothing, or a width that does not change the model, gives exponents near
# zero and fails the bars. (`full` uses the standard bars; its larger data should only straighten the lines.)

# %%
def r_squared(x: list[float], y: list[float], a: float, alpha: float) -> float:
    """Share of the variance of log y explained by the line log y = log a - alpha log x."""
    lx, ly = torch.tensor(x, dtype=torch.float64).log(), torch.tensor(y, dtype=torch.float64).log()
    residuals = ly - (math.log(a) - alpha * lx)
    return 1 - (residuals.square().sum() / (ly - ly.mean()).square().sum()).item()


def held_out_miss(x: list[float], y: list[float]) -> tuple[float, float]:
    """Fit on all points but the last; return (prediction at the last x, relative miss |pred / measured - 1|)."""
    a, alpha = fit_power_law(x[:-1], y[:-1])
    prediction = a * x[-1] ** -alpha
    return prediction, abs(prediction / y[-1] - 1)


bars = lib.pick(FIT_BARS)
fit_report = {}
for name, x, y, (a, alpha) in (("size", sizes, error_vs_size, (a_n, scaling_exponent)),
                               ("data", data_sizes, error_vs_data, (a_d, data_exponent))):
    r2 = r_squared(x, y, a, alpha)
    correlation = torch.corrcoef(torch.tensor([x, y], dtype=torch.float64).log())[0, 1].item()
    lib.close(r2, correlation**2, f"R² of the {name} fit = squared correlation", quiet=True)
    prediction, miss = held_out_miss(x, y)
    fit_report[name] = dict(r2=r2, miss=miss)
    bar = bars[name]
    print(f"{name}: exponent {alpha:.3f} (bar ≥ {bar['exponent']}), R² {r2:.3f} (bar ≥ {bar['r2']}); fitted "
          f"without the largest point, the line predicts {prediction:.3f} there, measured {y[-1]:.3f} "
          f"(off by {miss:.0%}, bar ≤ {bar['miss']:.0%})")
    assert alpha >= bar["exponent"], f"{name} exponent {alpha:.3f} is below {bar['exponent']}: did the models learn?"
    assert r2 >= bar["r2"], f"{name}: the line explains only R² = {r2:.2f} of the spread"
    assert miss <= bar["miss"], f"{name}: the held-out prediction misses by {miss:.0%}"
assert train_error_vs_size[-1] < 0.01, "the widest model should fit its training digits"
assert data_exponent > scaling_exponent, "with this little data, more data should pay more than more width"

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for ax, x, y, (a, alpha), label in (
    (left, sizes, error_vs_size, (a_n, scaling_exponent), "parameters N"),
    (right, data_sizes, error_vs_data, (a_d, data_exponent), "training digits D (width 128)"),
):
    ax.loglog(x, y, "o", ms=7, label="measured")
    grid = torch.logspace(math.log10(min(x)), math.log10(max(x)), 50)
    ax.loglog(grid, a * grid**-alpha, "--", label=f"fit: {a:.2f}·x^-{alpha:.2f}")
    held_a, held_alpha = fit_power_law(x[:-1], y[:-1])
    ax.loglog(x[-1], held_a * x[-1] ** -held_alpha, "x", ms=10, mew=2, color="tab:red",
              label="predicted from the smaller ones")
    ax.set(xlabel=label, ylabel=f"validation error ({len(split.val_y)} digits)")
    ax.xaxis.set_minor_formatter(NullFormatter())
    for formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        formatter(FormatStrFormatter("%.2f"))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
left.set_title("error vs model size")
right.set_title("error vs data size")
fig.tight_layout()
plt.show()

# %% [markdown]
# On log–log axes both series are close to straight lines: a power law, like the large-model curves but over
# only one to three decades, and the smaller runs predict the largest one. Three honest caveats. The size curve
# is much the shallower: from a modest width on, every model fits its training digits almost perfectly (the
# training-error column), so what limits it is the data, not the parameters. Width 4 is left out: it cannot fit
# its training digits, and what it reaches depends on the seed (validation error 0.18–0.34 over five seeds in
# standard), a different regime that no single line through the others describes. And large-model scaling laws
# are stated for the *loss* of models trained to a compute budget, not for the error of models trained a fixed
# number of steps. The lesson carries over: bigger models and more data buy predictable improvements, at a
# predictable price in compute, which is why the field scaled up, and one without the other runs into a floor.
#
# ## 6 · Applications in industry
#
# | field | what large models do | where in this course |
# |---|---|---|
# | natural language processing (自然语言处理) | chat assistants, translation, search, summarising, code | 04 (RNN), 08 (transformers) |
# | computer vision (计算机视觉) | recognition, inspection on production lines, document reading | 03 (CNN), 05 (anomaly detection) |
# | speech (语音) | recognition, synthesis, real-time translation | 04 (sequences) |
# | recommendation (推荐系统) | ranking feeds, products, ads from behaviour sequences | 02 (MLPs), 08 (attention) |
# | games (游戏) | game-playing agents, content and level generation | 07 (GANs), 06 (VAEs) |
# | medicine (医疗) | reading scans, protein structure, drug and molecule design | 03, 06 (molecule VAEs) |
# | finance (金融) | fraud detection, risk, forecasting, document analysis | 04 (forecasting), 05 (anomalies) |
#
# ## 7 · Trends and challenges
#
# * **Compute (算力).** Training cost grows as $6ND$ (more for convolutions); section 3 computed about 80
#   GPU-years for GPT-3. Efficient training (mixed precision, data loading without overhead, see `benchmarks/`)
#   and distributed training (chapter 11).
# * **Data privacy (数据隐私).** Models trained on broad data can memorise it; chapter 05 shows memorisation in a
#   small autoencoder, chapter 12 covers federated learning and differential privacy.
# * **Interpretability (可解释性).** Billions of weights are hard to read; chapters 03 and 04 open small models
#   (filters, feature maps, gates), chapter 12 the large-model tools.
# * **Bias (偏见).** A model learns the skews of its data at scale; chapter 12 measures it.
# * **Model compression (模型压缩).** Section 4's 2 bytes/parameter for bf16 inference is the starting point for
#   quantisation and distillation (chapter 11).

# %% [markdown]
# ## 8 · Exercises
#
# **Exercise 1.** Write `inference_gib(parameters, bits)`: the memory in GiB (2**30 bytes) to hold a model's weights
# at a given precision. The test uses a 7-billion-parameter model at 16 and 4 bits.

# %%
def test_inference_gib(fn) -> None:
    assert abs(fn(7e9, 16) - 13.04) < 0.01, f"7B at 16 bits should be about 13.04 GiB, got {fn(7e9, 16)}"
    assert abs(fn(7e9, 4) - 3.26) < 0.01, f"7B at 4 bits should be about 3.26 GiB, got {fn(7e9, 4)}"
    assert math.isclose(fn(numel(mlp), 32) * 2**30, 4 * numel(mlp), rel_tol=1e-9), "32 bits are 4 bytes"


def inference_gib(parameters: float, bits: int) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_inference_gib(inference_gib), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_inference_gib(parameters: float, bits: int) -> float:
    return parameters * bits / 8 / 2**30


lib.self_check(lambda: test_inference_gib(solution_inference_gib), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_inference_gib(lambda n, bits: n * bits / 8 / 1e9), "GB (10**9) instead of GiB")
lib.check.must_reject(lambda: test_inference_gib(lambda n, bits: n * bits / 2**30), "bits not divided by 8")
lib.check.must_reject(lambda: test_inference_gib(lambda n, bits: 16 * n / 2**30),
                      "the 16 bytes per parameter of training instead of the inference weights")

# %% [markdown]
# **Exercise 2.** Use the compute formula: how many tokens can you train a 1-billion-parameter model on with
# $10^{21}$ FLOPs? Write `tokens_for_budget(parameters, flops)`.

# %%
def test_tokens_for_budget(fn) -> None:
    assert abs(fn(1e9, 1e21) / 1.667e11 - 1) < 1e-3, f"1B parameters and 1e21 FLOPs: got {fn(1e9, 1e21):.4g}"
    assert abs(fn(gpt3_parameters, gpt3_training_flops) / gpt3_tokens - 1) < 1e-9


def tokens_for_budget(parameters: float, flops: float) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_tokens_for_budget(tokens_for_budget), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_tokens_for_budget(parameters: float, flops: float) -> float:
    return flops / (6 * parameters)


lib.self_check(lambda: test_tokens_for_budget(solution_tokens_for_budget), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_tokens_for_budget(lambda n, c: c / (2 * n)), "the forward pass only (2ND)")
lib.check.must_reject(lambda: test_tokens_for_budget(lambda n, c: c / 6 * n), "c / 6 * n (a missing bracket)")
lib.check.must_reject(lambda: test_tokens_for_budget(lambda n, c: 20 * n), "Chinchilla's 20 tokens per parameter")

# %% [markdown]
# **Exercise 3 (think).** In the scaling experiment, the largest widths gain little. Is the model too big for the
# data, or the data too small for the model? Which plot tells you, and what would you change first?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
fits_all = min(w for i, w in enumerate(S["widths"]) if max(train_error_vs_size[i:]) < 0.01)
lib.model_answer(f"""
**The data is too small for the model.** The models are not "too big" in a harmful way: the widest one still
does no worse than the narrowest ({error_vs_size[-1]:.3f} against {error_vs_size[0]:.3f} validation error).
Three measurements say where the limit is:

* From width {fits_all} up, the training error is below 1%: these models already fit nearly all {n_train:,} training
  digits, so extra parameters have nothing left to learn from them. What they still get wrong on validation is
  a generalisation gap, and only more (or more varied) data closes it.
* The data plot is steeper and still falling at its end: going from {data_sizes[-2]:,} to {data_sizes[-1]:,} digits took the
  width-128 model from {error_vs_data[-2]:.3f} to {error_vs_data[-1]:.3f}, while doubling the width from
  {S["widths"][-2]} to {S["widths"][-1]} moved the error from {error_vs_size[-2]:.3f} to {error_vs_size[-1]:.3f}.
* The data exponent ({data_exponent:.2f}) is {data_exponent / scaling_exponent:.1f}× the size exponent
  ({scaling_exponent:.2f}).

So change the data first: the full profile's 55,000 digits, or data augmentation (shifted, slightly rotated
digits) if no more data exists; then a larger model pays again. A model-limited experiment looks the other way
round: training error well above zero, and a size curve that keeps falling. Large-model practice balances the
two: for a compute budget, the Chinchilla rule grows parameters and tokens together (about 20 tokens per
parameter).
""")

# %% [markdown]
#
# ## 9 · Summary and FAQ
#
# * A large model is large in parameters, data and compute at once; its structure is built from the families of
#   this course, above all the transformer.
# * Parameters: $12Ld^2$ for a GPT. Compute: $6ND$ for dense and transformer layers, counted per token
#   (2 FLOPs per parameter forward, 4 backward); a convolution reuses its weights at every position and costs
#   several times more (6.75 × $6ND$ for LeNet-5). Training memory: $2+2+4+4+4 = 16$ bytes per parameter with
#   Adam in mixed precision. GPT-3: 175B parameters, $3.1\times10^{23}$ FLOPs, 2.8 TB of training state.
# * Even on 3,500 digits, validation error falls as a power law in model size and in data size, and the
#   smaller runs predict the largest one; the size curve flattens once the data runs out.
#
# **FAQ.** *Is a bigger model always better?* Only with data and compute to match; the laptop experiment flattens
# when data runs out. *Why does $6ND$ ignore attention?* Attention adds $12Td$ FLOPs per token and layer, which
# grows with the context length $T$; for GPT-3 it is a few percent (section 3 computes it). *Where do the 16 bytes go at inference?* Only the weights remain: 2 bytes per
# parameter in bf16, less with quantisation (exercise 1), plus a cache of past keys and values for language models.

# %%
lib.save_results("01_large_models", {
    "scaling_exponent": scaling_exponent,
    "data_scaling_exponent": data_exponent,
    "mlp_parameters": numel(mlp),
    "lenet_parameters": numel(lenet),
    "gpt3_parameters": gpt3_parameters,
    "gpt3_training_flops": gpt3_training_flops,
    "gpt3_training_memory_tb": gpt3_training_memory_tb,
})
