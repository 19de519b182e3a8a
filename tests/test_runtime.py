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
