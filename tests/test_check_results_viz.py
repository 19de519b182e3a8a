import json

import ipywidgets as widgets
import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import lib  # noqa: E402
from lib import results, viz  # noqa: E402


def test_close_passes_and_reports_the_worst_entry(capsys):
    lib.close(torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9], "pair")
    assert "✓ pair" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"1 of 3 entries differ.*index \(2,\).*actual 9 vs expected 3"):
        lib.close(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 2.0, 3.0]), "vec")


def test_close_checks_shape_and_nan():
    with pytest.raises(AssertionError, match=r"shape \(2,\) but expected \(3,\)"):
        lib.close(torch.zeros(2), torch.zeros(3))
    with pytest.raises(AssertionError, match="differ"):
        lib.close(torch.tensor([float("nan")]), torch.tensor([0.0]))


def test_shape_check():
    lib.check.shape(torch.zeros(4, 10), (None, 10))
    with pytest.raises(AssertionError, match=r"logits: shape \(4, 9\) but expected \('any', 10\)"):
        lib.check.shape(torch.zeros(4, 9), (None, 10), "logits")


def test_self_check_modes(capsys):
    def unattempted():
        raise NotImplementedError

    def wrong():
        assert 1 == 2, "one is not two"

    lib.self_check(unattempted, "Ex")
    assert "not attempted" in capsys.readouterr().out
    lib.self_check(wrong, "Ex")
    assert "not yet right: one is not two" in capsys.readouterr().out
    lib.self_check(lambda: None, "Ex")
    assert "✓ Ex: correct" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        lib.self_check(wrong, "Ex", strict=True)


def test_self_check_reports_a_crashing_attempt(capsys):
    def crashes():
        torch.zeros(2) @ torch.zeros(3)

    lib.self_check(crashes, "Ex")  # must not stop Run All
    assert "Ex: your code raised RuntimeError" in capsys.readouterr().out
    with pytest.raises(RuntimeError):
        lib.self_check(crashes, "Ex", strict=True)


def test_must_reject_fails_when_a_wrong_answer_passes(capsys):
    def strict_test():
        assert 1 + 1 == 3, "wrong"

    lib.check.must_reject(strict_test, "a wrong sum")
    assert "rejects a wrong sum" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="accepts a lenient answer"):
        lib.check.must_reject(lambda: None, "a lenient answer")


def test_model_answer_displays_markdown(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    lib.model_answer("""
        **(a)** because $x > 0$.
    """)
    assert shown[0].data == "**(a)** because $x > 0$."


def test_results_record_and_table(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    record = results.save_results("99_demo", {"test_accuracy": 0.5})
    saved = json.loads((tmp_path / "99_demo.json").read_text())
    assert saved == record and saved["profile"] == "quick" and saved["metrics"] == {"test_accuracy": 0.5}
    assert set(saved) == {"chapter", "profile", "device", "torch", "seconds", "metrics"}
    assert "99_demo" in results.table()
    with pytest.raises(ValueError, match="snake_case"):
        results.save_results("99_demo", {"Test Accuracy": 0.5})
    with pytest.raises(ValueError, match="finite"):
        results.save_results("99_demo", {"loss": float("nan")})


def test_confusion_matrix_counts():
    m = viz.confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert viz.plot_confusion(m, ["a", "b", "c"]).axes


def test_image_grid_rejects_colour_images():
    assert len(lib.image_grid(torch.rand(3, 1, 8, 8), ["a", "b", "c"], columns=2).axes) == 4
    with pytest.raises(ValueError, match="1 channel"):
        lib.image_grid(torch.rand(2, 3, 8, 8))


def test_history_plot_and_repr():
    history = lib.History([{"epoch": 1, "loss": 2.0, "acc": 0.5}, {"epoch": 2, "loss": 1.0, "acc": 0.7}])
    assert history.metrics() == ["loss", "acc"]
    assert len(history.plot().axes) == 2
    assert "loss=1" in repr(history)


def test_explorer_redraws_when_a_control_changes():
    seen = []

    def draw(k):
        seen.append(k)
        fig = matplotlib.figure.Figure()
        fig.suptitle(f"k={k}")
        return fig

    explorer = lib.widgets.Explorer(draw, k=widgets.IntSlider(value=1, min=0, max=5))
    explorer.controls["k"].value = 4
    assert seen == [1, 4] and explorer.values == {"k": 4} and explorer.redraws == 2
    assert explorer.figure._suptitle.get_text() == "k=4"
    with pytest.raises(ValueError, match="at least one control"):
        lib.widgets.Explorer(draw)
