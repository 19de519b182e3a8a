import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lib
from lib import train


def _problem(seed=0):
    """A small real-number regression: y = 3x - 1 with noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 1, generator=g)
    y = 3 * x - 1 + 0.01 * torch.randn(64, 1, generator=g)
    return x, y


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer


def _step(model, optimizer):
    def step(x, y):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss}
    return step


def test_fit_learns_and_records_history():
    x, y = _problem()
    model, optimizer = _setup()
    history = lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 30, live=False, progress=False,
                      evaluate=lambda: {"val_loss": F.mse_loss(model(x), y).item()})
    assert len(history) == 30 and history["epoch"] == list(range(1, 31))
    assert history.last("loss") < history["loss"][0] / 10
    assert history.last("val_loss") < 0.05
    with pytest.raises(KeyError, match="known"):
        history["accuracy"]


def test_nan_loss_stops_with_explanation():
    x, y = _problem()
    model, _ = _setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e6)  # diverges
    with pytest.raises(lib.train.NonFiniteLossError, match="learning rate"):
        lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 50, live=False, progress=False)


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    x, y = _problem()
    model, optimizer = _setup()
    lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=8, seed=5), 4, live=False, progress=False)
    expected = model.weight.detach().clone()

    model, optimizer = _setup()
    batches = lib.Batches(x, y, batch_size=8, seed=5)
    path = tmp_path / "run.pt"
    calls = {"n": 0}
    inner = _step(model, optimizer)

    def interrupted(xb, yb):
        calls["n"] += 1
        if calls["n"] == 2 * len(batches) + 3:  # part-way through epoch 3
            raise KeyboardInterrupt
        return inner(xb, yb)

    with pytest.raises(KeyboardInterrupt):
        lib.fit(interrupted, batches, 4, checkpoint=path, state={"model": model, "optimizer": optimizer},
                live=False, progress=False)
    assert torch.load(path, weights_only=True)["epoch"] == 2

    # a fresh process would rebuild everything and call fit again with the same checkpoint
    model, optimizer = _setup(seed=99)
    batches = lib.Batches(x, y, batch_size=8, seed=5)
    history = lib.fit(_step(model, optimizer), batches, 4, checkpoint=path,
                      state={"model": model, "optimizer": optimizer}, live=False, progress=False)
    assert history["epoch"] == [1, 2, 3, 4]
    lib.close(model.weight, expected, "resumed weights", rtol=1e-6, atol=1e-7, quiet=True)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    x, y = _problem()
    model, optimizer = _setup()
    path = tmp_path / "run.pt"
    lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 1, checkpoint=path,
            state={"model": model}, live=False, progress=False)
    other = nn.Linear(1, 2)
    with pytest.raises(ValueError, match="did the model change"):
        lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 2, checkpoint=path,
                state={"model": other}, live=False, progress=False)


def test_fit_rejects_bad_arguments(tmp_path):
    x, y = _problem()
    model, optimizer = _setup()
    with pytest.raises(ValueError, match="epochs"):
        lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 0)
    with pytest.raises(ValueError, match="state="):
        lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), 1, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="no batches"):
        lib.fit(_step(model, optimizer), [], 1, live=False, progress=False)


def test_supervised_step_and_accuracy_on_digits():
    split = lib.load_digits("quick")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = lib.fit(lib.supervised_step(model, optimizer, clip=1.0), lib.Batches(split.train_x, split.train_y,
                      batch_size=64), 3, live=False, progress=False)
    assert history.last("train_accuracy") > 0.8
    assert lib.accuracy(model, split.test_x, split.test_y) > 0.75
    assert model.training  # predict restores the mode it found


def test_checkpoint_path_depends_on_config(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    a = train.checkpoint_path("02", "mlp", lr=0.1)
    assert a == train.checkpoint_path("02", "mlp", lr=0.1) and a.parent == tmp_path / "02"
    assert a != train.checkpoint_path("02", "mlp", lr=0.2)
    monkeypatch.setenv("COURSE_PROFILE", "standard")
    assert a != train.checkpoint_path("02", "mlp", lr=0.1)


def test_prepare_model_keeps_outputs_and_uses_channels_last():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 2))
    x = torch.rand(2, 3, 5, 5)
    expected = model(x)
    prepared = lib.prepare_model(model, torch.device("cpu"))
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
    lib.close(prepared(x), expected, "channels_last output", rtol=1e-5, atol=1e-6, quiet=True)


def test_autocast_is_a_no_op_on_cpu():
    model = nn.Conv2d(1, 2, 3)
    with lib.autocast(torch.device("cpu")):
        assert model(torch.ones(1, 1, 5, 5)).dtype == torch.float32
