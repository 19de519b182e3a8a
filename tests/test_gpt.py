import math

import pytest
import torch

from lib import gpt as G


def small_model(seed: int = 0) -> G.GPT:
    torch.manual_seed(seed)
    return G.GPT(vocab_size=11, context=16, width=32, layers=2, heads=4).eval()


def test_shapes_and_parameter_count():
    model = small_model()
    ids = torch.randint(0, 11, (3, 16))
    assert model(ids).shape == (3, 16, 11)
    assert model.hidden(ids).shape == (3, 16, 32)
    d, layers = 32, 2  # chapter 01's count: L (12 d² + 13 d) + V d + T d + 2 d, output layer tied
    assert sum(p.numel() for p in model.parameters()) == layers * (12 * d * d + 13 * d) + 11 * d + 16 * d + 2 * d


def test_hidden_is_what_the_tied_output_layer_reads():
    model = small_model()
    ids = torch.randint(0, 11, (2, 9))
    torch.testing.assert_close(model.hidden(ids) @ model.tok.weight.T, model(ids))


def test_causal_a_change_at_t_leaves_earlier_logits_unchanged():
    model = small_model()
    ids = torch.randint(0, 11, (2, 16))
    for t in (0, 7, 15):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        before, after = model(ids), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t])
        assert not torch.allclose(before[:, t], after[:, t]), "the changed position itself must move"


def test_kv_cache_gives_the_same_logits():
    model = small_model()
    ids = torch.randint(0, 11, (1, 10))
    full = model(ids)
    logits, caches = model.forward_cached(ids[:, :1], None)
    steps = [logits[:, -1]]
    for t in range(1, 10):
        logits, caches = model.forward_cached(ids[:, t : t + 1], caches)
        steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_bad_input_gets_one_clear_error():
    model = small_model()
    with pytest.raises(ValueError, match="at most 16 positions"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(batch, positions\)"):
        model(torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of heads"):
        G.GPT(11, 16, 30, 1, 4)
    with pytest.raises(ValueError, match="longer than the context"):
        G.RandomWindows(torch.arange(10), context=10, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="need more than"):
        G.nats_per_char(model, torch.arange(5), context=16)


def test_random_windows_are_shifted_by_one_and_reproducible():
    ids = torch.arange(100)
    first = [x for x, _ in G.RandomWindows(ids, 8, 4, 3, seed=1)]
    again = list(G.RandomWindows(ids, 8, 4, 3, seed=1))
    assert len(first) == 3 and all(torch.equal(a, b[0]) for a, b in zip(first, again, strict=True))
    x, y = again[0]
    assert x.shape == (4, 8) and torch.equal(y, x + 1)


def test_nats_per_char_scores_each_token_once_and_uniform_model_gives_log_v():
    model = small_model()
    with torch.no_grad():  # a model whose logits are all zero predicts uniformly: ln V per token
        for p in model.parameters():
            p.zero_()
    ids = torch.randint(0, 11, (200,))
    assert abs(G.nats_per_char(model, ids, 16, stride=5) - math.log(11)) < 1e-5


def test_nats_per_char_matches_a_single_window_cross_entropy():
    model = small_model()
    ids = torch.randint(0, 11, (17,))
    expected = torch.nn.functional.cross_entropy(model(ids[None, :-1])[0], ids[1:]).item()
    assert abs(G.nats_per_char(model, ids, 16) - expected) < 1e-5


def test_training_step_lowers_the_loss_and_schedule_warms_up_then_decays():
    torch.manual_seed(0)
    model = G.GPT(5, 8, 16, 1, 2)
    optimizer = G.adamw(model, 1e-2)
    schedule = G.warmup_cosine(optimizer, steps=40, warmup=5)
    step = G.lm_step(model, optimizer, schedule)
    ids = torch.arange(200) % 5  # a repeating pattern, easy to learn
    losses = [step(x, y)["loss"].item() for x, y in G.RandomWindows(ids, 8, 8, 40)]
    assert losses[-1] < losses[0] / 4
    assert math.isclose(optimizer.param_groups[0]["lr"], 1e-3, rel_tol=1e-6)  # cosine ends at a tenth


def test_adamw_optimises_only_trainable_parameters():
    model = small_model()
    model.tok.weight.requires_grad_(False)
    optimizer = G.adamw(model, 1e-3)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.tok.weight) not in held and id(model.ln.weight) in held
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
