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


def _interruptible(step, stop_at):
    """The same step, raising KeyboardInterrupt (like the stop button) on call number `stop_at`."""
    calls = {"n": 0, "stop_at": stop_at}  # a dict, so the run's fingerprint does not depend on stop_at

    def interruptible(*batch):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return step(*batch)

    return interruptible


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    x, y = _problem()
    model, optimizer = _setup()
    lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=8, seed=5), 4, live=False, progress=False)
    expected = model.weight.detach().clone()

    model, optimizer = _setup()
    batches = lib.Batches(x, y, batch_size=8, seed=5)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):  # part-way through epoch 3
        lib.fit(_interruptible(_step(model, optimizer), 2 * len(batches) + 3), batches, 4, checkpoint=path,
                state={"model": model, "optimizer": optimizer}, live=False, progress=False)
    assert torch.load(path, weights_only=True)["epoch"] == 2

    # a fresh process would rebuild everything and call fit again with the same checkpoint
    model, optimizer = _setup(seed=99)
    batches = lib.Batches(x, y, batch_size=8, seed=5)
    history = lib.fit(_interruptible(_step(model, optimizer), None), batches, 4, checkpoint=path,
                      state={"model": model, "optimizer": optimizer}, live=False, progress=False)
    assert history["epoch"] == [1, 2, 3, 4]
    lib.close(model.weight, expected, "resumed weights", rtol=1e-6, atol=1e-7, quiet=True)


def _finished_run(path, epochs=3):
    x, y = _problem()
    model, optimizer = _setup()
    lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=16), epochs, checkpoint=path,
            state={"model": model, "optimizer": optimizer}, live=False, progress=False)
    return x, y


def _l1_step(model, optimizer):
    def step(x, y):
        optimizer.zero_grad()
        loss = F.l1_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss}
    return step


def test_changed_loss_code_starts_afresh(tmp_path, capsys):
    """An exercise that changes the loss must not resume the finished run and 'show' no change."""
    path = tmp_path / "run.pt"
    x, y = _finished_run(path)
    model, optimizer = _setup()
    history = lib.fit(_l1_step(model, optimizer), lib.Batches(x, y, batch_size=16), 3, checkpoint=path,
                      state={"model": model, "optimizer": optimizer}, live=False, progress=False)
    assert "different run" in capsys.readouterr().out
    assert history["epoch"] == [1, 2, 3] and path.with_suffix(".stale.pt").exists()
    assert torch.load(path, weights_only=True)["fingerprint"] == lib.train.run_fingerprint(
        _l1_step(model, optimizer), {"model": model, "optimizer": optimizer})


def test_changed_model_or_optimizer_starts_afresh(tmp_path, capsys):
    path = tmp_path / "run.pt"
    x, y = _finished_run(path)
    wider = nn.Sequential(nn.Linear(1, 8), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(wider.parameters(), lr=0.1)
    lib.fit(_step(wider, optimizer), lib.Batches(x, y, batch_size=16), 3, checkpoint=path,
            state={"model": wider, "optimizer": optimizer}, live=False, progress=False)
    assert "different run" in capsys.readouterr().out
    model, _ = _setup()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    lib.fit(_step(model, adam), lib.Batches(x, y, batch_size=16), 3, checkpoint=path,
            state={"model": model, "optimizer": adam}, live=False, progress=False)
    assert "different run" in capsys.readouterr().out


def test_same_run_resumes_even_after_training(tmp_path, capsys):
    """Running the same cell again (objects already trained, a scheduler already stepped) resumes."""
    x, y = _problem()
    model, optimizer = _setup()
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=40)
    inner = _step(model, optimizer)

    def step(xb, yb):
        out = inner(xb, yb)
        schedule.step()
        return out

    state = {"model": model, "optimizer": optimizer, "schedule": schedule}
    path = tmp_path / "run.pt"
    lib.fit(step, lib.Batches(x, y, batch_size=16), 3, checkpoint=path, state=state, live=False, progress=False)
    history = lib.fit(step, lib.Batches(x, y, batch_size=16), 3, checkpoint=path, state=state, live=False,
                      progress=False)
    assert "3 of 3 epochs already done" in capsys.readouterr().out and len(history) == 3


def test_fingerprint_follows_code_not_comments_or_values():
    model, optimizer = _setup()
    first = lib.train.run_fingerprint(_step(model, optimizer), {"model": model})
    with torch.no_grad():
        model.weight.add_(1.0)  # trained values are not part of a run's identity
    assert lib.train.run_fingerprint(_step(model, optimizer), {"model": model}) == first
    assert lib.train.run_fingerprint(_l1_step(model, optimizer), {"model": model}) != first
    assert lib.train.run_fingerprint(_step(model, optimizer), {"model": nn.Linear(1, 1, bias=False)}) != first


def test_resume_restores_augmentation_generator(tmp_path):
    """A step that draws augmentation noise from its own generator continues the same noise after a resume."""
    x, y = _problem()

    def run(path, interrupt_at=None, seed=0):
        model, optimizer = _setup(seed)
        augment = torch.Generator().manual_seed(7)
        inner = _step(model, optimizer)

        def step(xb, yb):
            return inner(xb + 0.1 * torch.randn(xb.shape, generator=augment), yb)

        lib.fit(_interruptible(step, interrupt_at), lib.Batches(x, y, batch_size=8, seed=5), 4, checkpoint=path,
                live=False, progress=False,
                state={"model": model, "optimizer": optimizer, "augment": augment})
        return model.weight.detach().clone()

    expected = run(tmp_path / "straight.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken.pt", interrupt_at=2 * 8 + 3)
    resumed = run(tmp_path / "broken.pt", seed=99)
    lib.close(resumed, expected, "resumed weights with augmentation", rtol=1e-6, atol=1e-7, quiet=True)


def test_fit_reads_metrics_once_per_sync_interval(monkeypatch):
    """The loop must not wait for the device after every step: few .item() calls per epoch."""
    x = torch.rand(1200, 1)
    y = 3 * x
    model, optimizer = _setup()
    reads = {"n": 0}
    item = torch.Tensor.item

    def counting_item(self):
        reads["n"] += 1
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    lib.fit(_step(model, optimizer), lib.Batches(x, y, batch_size=4), 1, live=False, progress=False)
    batches = 300
    assert reads["n"] <= batches // lib.train.SYNC_EVERY + 2, f"{reads['n']} reads for {batches} batches"


def test_nan_is_caught_within_a_sync_interval():
    x, y = _problem()
    model, optimizer = _setup()
    calls = {"n": 0}
    inner = _step(model, optimizer)

    def step(xb, yb):
        calls["n"] += 1
        out = inner(xb, yb)
        return {"loss": out["loss"] * (float("nan") if calls["n"] == 3 else 1.0)}

    with pytest.raises(lib.train.NonFiniteLossError, match="loss=nan"):
        lib.fit(step, lib.Batches(x, y, batch_size=1), 5, live=False, progress=False)
    assert calls["n"] <= lib.train.SYNC_EVERY


def test_autocast_uses_native_bf16_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not lib.train.native_bf16(torch.device("cuda"))  # emulated bf16 (T4, V100) does not count
    assert not lib.train.native_bf16(torch.device("cpu"))


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
