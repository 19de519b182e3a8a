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
# 3. Run a laptop-sized **scaling experiment**: test error against parameter count and against data size on
#    real digits, and fit a power law to it.
# 4. Map where large models are used in industry, and which challenges later chapters take up.
#
# **Time:** quick ≈ 30 s · standard ≈ 1 min · full ≈ 3 min (GPU).

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.ticker import NullFormatter
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lib

device = lib.setup(seed=0)

# %%
SETTINGS = {
    "quick": dict(widths=[4, 16, 64, 256], data_sizes=[250, 500, 1000], steps=300),
    "standard": dict(widths=[4, 8, 16, 32, 64, 128, 256, 512], data_sizes=[250, 500, 1000, 2000, 4000], steps=1500),
    "full": dict(widths=[4, 8, 16, 32, 64, 128, 256, 512, 1024], data_sizes=[500, 2000, 8000, 30000, 60000],
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
# Each parameter takes part in one multiply-add per example in the forward pass (2 FLOPs) and about two in
# the backward pass (gradient with respect to the input, and with respect to the weight: 4 FLOPs). So training
# on $D$ examples (tokens, for a language model) costs
#
# $$ C \approx 6\,N\,D \;\text{floating-point operations (FLOPs)}. $$
#
# We check the factor 6 exactly, by counting the matrix-multiply FLOPs PyTorch performs for a forward and
# backward pass of the MLP (`FlopCounterMode`), then use it for GPT-3, trained on about 300 billion tokens.

# %%
batch = 32
x = torch.randn(batch, 1, 28, 28, requires_grad=True)  # input gradient on, so every layer does all 3 products
weights = sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear))
with FlopCounterMode(display=False) as counter:
    F.cross_entropy(mlp(x), torch.zeros(batch, dtype=torch.long)).backward()
measured = counter.get_total_flops()
print(f"counted {measured:,} FLOPs; 6 x weights x batch = {6 * weights * batch:,}")
assert measured == 6 * weights * batch

gpt3_tokens = 300e9
gpt3_training_flops = 6 * gpt3_parameters * gpt3_tokens
print(f"GPT-3 training compute: {gpt3_training_flops:.3g} FLOPs")
assert abs(gpt3_training_flops / 3.14e23 - 1) < 0.02, "GPT-3's paper reports 3.14e23 FLOPs"

# %% [markdown]
# How long is that? An accelerator that sustains $R$ FLOP/s needs $C/R$ seconds. At a realistic 40% of an
# A100's 312 TFLOP/s (bf16), that is:

# %%
sustained = 0.4 * 312e12
gpu_years = gpt3_training_flops / sustained / (3600 * 24 * 365)
print(f"{gpu_years:.0f} GPU-years on one A100, or {gpu_years * 365 / 1024:.0f} days on 1,024 of them")
assert 50 < gpu_years < 150

# %% [markdown]
# ## 4 · Training memory: 16 bytes per parameter
#
# Training with Adam in 32-bit floats keeps, per parameter: the weight (4 bytes), its gradient (4), and Adam's
# two moving averages $m$ and $s$ (4 + 4): **16 bytes per parameter** before counting activations. (Mixed
# precision keeps 2-byte weights and gradients but a 4-byte master copy: also 16.) We measure the three parts
# on the MLP after one real Adam step.

# %%
def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3)
F.cross_entropy(mlp(torch.randn(4, 1, 28, 28)), torch.zeros(4, dtype=torch.long)).backward()
optimizer.step()
parameters = list(mlp.parameters())
adam_states = [v for state in optimizer.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")]
measured_bytes = tensor_bytes(parameters) + tensor_bytes(p.grad for p in parameters) + tensor_bytes(adam_states)
assert measured_bytes == 16 * numel(mlp), (measured_bytes, 16 * numel(mlp))
print(f"MLP: {measured_bytes / 2**20:.1f} MiB measured = 16 bytes x {numel(mlp):,} parameters")
gpt3_training_memory_tb = 16 * gpt3_parameters / 1e12
print(f"GPT-3: {gpt3_training_memory_tb:.1f} TB of training state, about {gpt3_training_memory_tb * 1e3 / 80:.0f} "
      "80-GB GPUs just to hold it: why large models need distributed training (chapter 10)")

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


calculator = lib.widgets.Explorer(
    draw_size,
    layers=widgets.IntSlider(12, 1, 128, description="layers L"),
    width=widgets.IntSlider(768, 64, 16384, step=64, description="width d"),
    tokens_per_param=lib.widgets.slider(20, 1, 100, 1, "tokens/param"),
)
calculator

# %%
calculator.controls["layers"].value = 96
calculator.controls["width"].value = 12288
assert calculator.figure.axes[0].get_title() == f"L=96, d=12288: {gpt3_parameters / 1e9:.2f}B parameters"
calculator.controls["layers"].value, calculator.controls["width"].value = 12, 768
gpt2_small = gpt_params(12, 768, vocab=50257, context=2048)  # GPT-2 small has ~124M (1,024 positions)
assert f"{gpt2_small / 1e9:.2f}B parameters" in calculator.figure.axes[0].get_title()
assert abs(gpt2_small / 124e6 - 1) < 0.02

# %% [markdown]
# ## 5 · A scaling experiment on a laptop
#
# Large-model research found that test loss falls as a **power law (幂律)** in parameters $N$ and data $D$,
# $L(N) \approx (N_c/N)^{\alpha_N}$, over many orders of magnitude (Kaplan et al., 2020): a straight line on
# log–log axes. Does a tiny version hold on our digits? We train MLPs of growing width on the same data (a fixed
# number of updates each), then the same MLP on growing slices of the data, and record the test error.

# %%
split = lib.load_digits().to(device)


def train_mlp(hidden: int, n_train: int, steps: int, seed: int = 0) -> float:
    """Train a one-hidden-layer MLP for `steps` updates on the first `n_train` digits; return test error."""
    torch.manual_seed(seed)
    model = lib.prepare_model(nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)),
                              device)
    batches = lib.Batches(split.train_x[:n_train], split.train_y[:n_train], batch_size=64, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    lib.fit(lib.supervised_step(model, optimizer), batches, math.ceil(steps / len(batches)),
            live=False, progress=False)
    return 1 - lib.accuracy(model, split.test_x, split.test_y)


def fit_power_law(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares line through (log x, log y): returns (a, alpha) with y ≈ a * x ** -alpha."""
    lx, ly = torch.tensor(x).log(), torch.tensor(y).log()
    slope, intercept = torch.linalg.lstsq(torch.stack([lx, torch.ones_like(lx)], 1), ly.unsqueeze(1)).solution
    return math.exp(intercept.item()), -slope.item()


n_train = len(split.train_y)
sizes = [numel(nn.Sequential(nn.Linear(784, w), nn.Linear(w, 10))) for w in S["widths"]]
error_vs_size = [train_mlp(w, n_train, S["steps"]) for w in S["widths"]]
error_vs_data = [train_mlp(128, n, S["steps"]) for n in S["data_sizes"] if n <= n_train]
data_sizes = [n for n in S["data_sizes"] if n <= n_train]
a_n, scaling_exponent = fit_power_law(sizes, error_vs_size)
a_d, data_exponent = fit_power_law(data_sizes, error_vs_data)
for w, n, e in zip(S["widths"], sizes, error_vs_size, strict=True):
    print(f"width {w:4d}: {n:8,} parameters, test error {e:.3f}")
print(f"fitted: error ≈ {a_n:.2f} · N^-{scaling_exponent:.3f}   and   error ≈ {a_d:.2f} · D^-{data_exponent:.3f}")

# %% [markdown]
# Check the fit: the fitted line's prediction at the largest model should be close to what we measured, and a
# least-squares fit is the best line, so nudging its slope must make the squared log-error worse.

# %%
def log_residual(a: float, alpha: float, x: list[float], y: list[float]) -> float:
    return sum((math.log(a * xi**-alpha) - math.log(yi)) ** 2 for xi, yi in zip(x, y, strict=True))


best = log_residual(a_n, scaling_exponent, sizes, error_vs_size)
assert best <= log_residual(a_n, scaling_exponent * 1.05, sizes, error_vs_size)
assert best <= log_residual(a_n, scaling_exponent * 0.95, sizes, error_vs_size)
assert scaling_exponent > 0.05 and data_exponent > 0.05, "more parameters and more data should lower the error"
assert error_vs_size[-1] < error_vs_size[0] and error_vs_data[-1] < error_vs_data[0]

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for ax, x, y, (a, alpha), label in (
    (left, sizes, error_vs_size, (a_n, scaling_exponent), "parameters N"),
    (right, data_sizes, error_vs_data, (a_d, data_exponent), "training digits D (width 128)"),
):
    ax.loglog(x, y, "o", ms=7, label="measured")
    grid = torch.logspace(math.log10(min(x)), math.log10(max(x)), 50)
    ax.loglog(grid, a * grid**-alpha, "--", label=f"fit: {a:.2f}·x^-{alpha:.2f}")
    ax.set(xlabel=label, ylabel="test error (1,000 held-out digits)")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend()
left.set_title("error vs model size")
right.set_title("error vs data size")
fig.tight_layout()
plt.show()

# %% [markdown]
# On log–log axes both series are close to straight lines: a power law, like the large-model curves but over
# only two or three decades. Two honest caveats. The curve must flatten eventually (error cannot go below the
# noise in the labels, and with 4,000 images the largest widths already gain less), and large-model scaling laws
# are stated for the *loss* of models trained to a compute budget, not for the error of models trained a fixed
# number of steps. The lesson carries over: bigger models and more data buy predictable improvements, at a
# predictable price in compute, which is why the field scaled up.
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
# * **Compute (算力).** Training cost grows as $6ND$; section 3 showed GPT-3 needs ~100 GPU-years. Efficient
#   training (mixed precision, data loading without overhead, see `benchmarks/`) and distributed training
#   (chapter 10).
# * **Data privacy (数据隐私).** Models trained on broad data can memorise it; chapter 05 shows memorisation in a
#   small autoencoder, chapter 10 covers federated learning and differential privacy.
# * **Interpretability (可解释性).** Billions of weights are hard to read; chapters 03 and 04 open small models
#   (filters, feature maps, gates), chapter 10 the large-model tools.
# * **Bias (偏见).** A model learns the skews of its data at scale; chapter 10 measures it.
# * **Compression (模型压缩).** Section 4's 2 bytes/parameter for bf16 inference is the starting point for
#   quantisation and distillation (chapter 10).

# %% [markdown]
# ## 8 · Exercises
#
# **Exercise 1.** Write `inference_gib(parameters, bits)`: the memory in GiB (2**30 bytes) to hold a model's weights
# at a given precision. The test uses a 7-billion-parameter model at 16 and 4 bits.

# %%
def test_inference_gib(fn) -> None:
    assert abs(fn(7e9, 16) - 13.04) < 0.01, f"7B at 16 bits should be about 13.04 GiB, got {fn(7e9, 16)}"
    assert abs(fn(7e9, 4) - 3.26) < 0.01
    assert fn(numel(mlp), 32) * 2**30 == 4 * numel(mlp)


def inference_gib(parameters: float, bits: int) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_inference_gib(inference_gib), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_inference_gib(parameters: float, bits: int) -> float:
    return parameters * bits / 8 / 2**30


lib.self_check(lambda: test_inference_gib(solution_inference_gib), "Exercise 1 (solution)", strict=True)

# %% [markdown]
# **Exercise 2.** Use the compute formula: how many tokens can you train a 1-billion-parameter model on with
# $10^{21}$ FLOPs? Write `tokens_for_budget(parameters, flops)`.

# %%
def test_tokens_for_budget(fn) -> None:
    assert abs(fn(1e9, 1e21) / 1.667e11 - 1) < 1e-3
    assert abs(fn(gpt3_parameters, gpt3_training_flops) / gpt3_tokens - 1) < 1e-9


def tokens_for_budget(parameters: float, flops: float) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_tokens_for_budget(tokens_for_budget), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_tokens_for_budget(parameters: float, flops: float) -> float:
    return flops / (6 * parameters)


lib.self_check(lambda: test_tokens_for_budget(solution_tokens_for_budget), "Exercise 2 (solution)", strict=True)

# %% [markdown]
# **Exercise 3 (think).** In the scaling experiment, the largest widths gain little. Is the model too big for the
# data, or the data too small for the model? Which plot tells you, and what would you change first?
#
# ## 9 · Summary and FAQ
#
# * A large model is large in parameters, data and compute at once; its structure is built from the families of
#   this course, above all the transformer.
# * Parameters: $12Ld^2$ for a GPT; compute: $6ND$; training memory: about 16 bytes per parameter. GPT-3:
#   175B parameters, $3.1\times10^{23}$ FLOPs, 2.8 TB of training state.
# * Even on 4,000 digits, error falls roughly as a power law in model size and data size.
#
# **FAQ.** *Is a bigger model always better?* Only with data and compute to match; the laptop experiment flattens
# when data runs out. *Why does $6ND$ ignore attention?* Attention adds a term that grows with context length;
# for GPT-3 it is a few percent. *Where do the 16 bytes go at inference?* Only the weights remain: 2 bytes per
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
