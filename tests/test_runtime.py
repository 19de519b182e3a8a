import pytest
import torch

from lib import runtime


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(runtime.ProfileError, match="quick, standard, full"):
        runtime.get_profile()


def test_profile_default_depends_on_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    expected = "full" if torch.cuda.is_available() else "standard"
    assert runtime.get_profile() == expected


def test_pick_uses_profile_and_requires_all(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    assert runtime.pick({"quick": 1, "standard": 2, "full": 3}) == 1
    with pytest.raises(KeyError, match="full"):
        runtime.pick({"quick": 1, "standard": 2})


def test_device_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="cuda, mps, cpu"):
        runtime.get_device()


def test_seed_is_reproducible():
    runtime.seed_everything(3)
    first = torch.rand(4)
    runtime.seed_everything(3)
    assert torch.equal(first, torch.rand(4))


def test_threads_and_banner(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        runtime.set_threads(0)
    line = runtime.banner()
    assert "profile=quick" in line and "torch" in line


def test_full_profile_without_network_runs_standard(monkeypatch, tmp_path, capsys):
    """The fallback path: full asked, no download possible -> standard data, settings and bars, said once."""
    import lib
    from lib import data

    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setattr(runtime, "_fallback_reason", None)
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ["https://127.0.0.1:9/"])
    assert runtime.get_profile() == "full"
    lib.setup(0)
    out = capsys.readouterr().out
    assert out.count("full → standard") == 1 and "(full asked; data offline)" in out
    assert "https://127.0.0.1:9/" in out.splitlines()[0], "the one line should say which mirror failed and why"
    assert runtime.get_profile() == "standard" and runtime.requested_profile() == "full"
    assert runtime.pick({"quick": 1, "standard": 2, "full": 3}) == 2
    split = lib.load_digits()
    assert len(split.train_x) == 3500 and len(split.val_x) == 500
    monkeypatch.setenv("COURSE_PROFILE", "standard")
    standard_path = lib.checkpoint_path("00", "x")
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert lib.checkpoint_path("00", "x") == standard_path  # the fallback run shares standard's checkpoints


def test_load_digits_in_full_falls_back_too(monkeypatch, tmp_path, capsys):
    from lib import data

    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setattr(runtime, "_fallback_reason", None)
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ["https://127.0.0.1:9/"])
    assert len(data.load_digits().train_x) == 3500
    assert runtime.get_profile() == "standard" and "full → standard" in capsys.readouterr().out


def test_synchronize_is_safe_on_cpu():
    runtime.synchronize(torch.device("cpu"))
