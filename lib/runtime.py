"""Where and how a chapter runs: device, seed, threads and the run profile."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

PROFILES = ("quick", "standard", "full")
DEVICES = ("cuda", "mps", "cpu")


class ProfileError(ValueError):
    """Raised for a `COURSE_PROFILE` value the course does not know."""


# Why this process runs `standard` although `full` was asked for (None: it does not).
_fallback_reason: str | None = None


def requested_profile() -> str:
    """The profile asked for in `COURSE_PROFILE`; default `full` with CUDA, else `standard`."""
    value = os.environ.get("COURSE_PROFILE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "standard"
    if value not in PROFILES:
        raise ProfileError(
            f"COURSE_PROFILE={value!r} is not a profile. Use one of {', '.join(PROFILES)} "
            "(quick = CI smoke run, standard = laptop CPU, full = GPU and full datasets)."
        )
    return value


def get_profile() -> str:
    """The profile this run uses: the requested one, or `standard` if `full` had to fall back."""
    profile = requested_profile()
    return "standard" if profile == "full" and _fallback_reason else profile


def fall_back_to_standard(reason: str) -> None:
    """Run the rest of this process with the standard profile's data, settings and bars; say so once."""
    global _fallback_reason
    if _fallback_reason is None:
        print(f"[profile] full → standard: {reason}. This run uses the offline data with the standard "
              "settings and bars.")
    _fallback_reason = reason


def pick(settings: dict[str, object]) -> object:
    """Choose the value for the current profile from a {profile: value} dict."""
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise KeyError(f"settings must name every profile; missing: {', '.join(missing)}")
    return settings[get_profile()]


def get_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU; `COURSE_DEVICE` (cuda | mps | cpu) overrides."""
    wanted = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if wanted:
        if wanted not in DEVICES:
            raise ValueError(f"COURSE_DEVICE={wanted!r} is not a device. Use one of {', '.join(DEVICES)}.")
        if not _available(wanted):
            raise RuntimeError(f"COURSE_DEVICE={wanted} but no {wanted} device is available; unset it.")
        return torch.device(wanted)
    return torch.device(next(d for d in DEVICES if _available(d)))


def _available(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_available()
    if device == "mps":
        return torch.backends.mps.is_available()
    return True


def synchronize(device: torch.device) -> None:
    """Wait until `device` has finished its queued work (CUDA and MPS run asynchronously); call it around
    anything you time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(count: int | None = None) -> int:
    """Set PyTorch's CPU threads (default: `OMP_NUM_THREADS` or all cores); return the count."""
    if count is None:
        count = int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1
    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    torch.set_num_threads(count)
    return count


def banner() -> str:
    """One line that says what this run uses: profile, device, threads and versions."""
    device = get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    profile = get_profile() + (" (full asked; data offline)" if _fallback_reason else "")
    return (
        f"profile={profile} | device={device.type} ({name}) | threads={torch.get_num_threads()} "
        f"| torch {torch.__version__} | python {platform.python_version()}"
    )


def setup(seed: int = 0) -> torch.device:
    """Seed, set threads, print the banner, return the device."""
    seed_everything(seed)
    set_threads()
    print(banner())
    return get_device()
