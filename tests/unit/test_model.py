"""The attention model: causal, blind to padding, never NaN, never recommends reserved ids."""

import pytest
import torch

from model_export.model import ModelConfig, NextActionModel, Predictor, StepPredictor
from streams.encoding import EncodingSpec

SPEC = EncodingSpec(max_len=12)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.for_encoding(SPEC, n_items=40, n_categories=9, d_model=32, dropout=0.0)
    return NextActionModel(cfg).eval()


def window(batch=3, length=10, seed=0, pad=0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(1, 6, (batch, length), generator=g)
    actions[:, :pad] = 0
    real = (actions > 0).long()
    return {
        "items": torch.randint(1, 40, (batch, length), generator=g) * real,
        "categories": torch.randint(1, 9, (batch, length), generator=g) * real,
        "actions": actions,
        "gaps": torch.randint(1, 32, (batch, length), generator=g) * real,
        "queries": torch.randint(0, 4096, (batch, length, 4), generator=g) * real[..., None],
    }


def run(model, x):
    """Every per-position output used in training, as (B, T, F)."""
    with torch.no_grad():
        h, memory, _ = model(x["items"], x["categories"], x["actions"], x["gaps"], x["queries"])
        att, _ = model.copy_attention(h, memory, x["items"])  # (B, S, T, T)
        copy = att.permute(0, 2, 1, 3).flatten(2)  # (B, T, S * T)
        return torch.cat([h, model.action_logits(h), model.slot_logits(h),
                          torch.softmax(model._item_queries(h) @ model.item.weight.t(), -1)
                          .flatten(2), copy, model.purchase_logit(h)[..., None],
                          model.log_seconds(h)[..., None]], dim=-1)


@pytest.mark.parametrize("changed", [4, 7, 9])
def test_changing_a_later_event_never_changes_earlier_outputs(model, changed):
    x = window()
    y = {k: v.clone() for k, v in x.items()}
    y["items"][:, changed] = 5
    y["actions"][:, changed] = 4
    y["gaps"][:, changed] = 30
    y["queries"][:, changed] = 77
    a, b = run(model, x), run(model, y)
    assert torch.allclose(a[:, :changed], b[:, :changed], atol=1e-6)
    assert not torch.allclose(a[:, changed:], b[:, changed:], atol=1e-4)


def test_left_padding_does_not_change_the_prediction(model):
    x = window(length=6)
    padded = {k: torch.cat([torch.zeros_like(v[:, :5]), v], dim=1) for k, v in x.items()}
    with torch.no_grad():
        a, b = Predictor(model, 10)(*x.values()), Predictor(model, 10)(*padded.values())
    for got, want in zip(b, a):
        assert torch.allclose(got.float(), want.float(), atol=1e-5)
    h_a = model(*x.values()).hidden
    h_b = model(*padded.values()).hidden[:, 5:]
    assert torch.allclose(h_a, h_b, atol=1e-5)


@pytest.mark.parametrize("pad", [0, 4])
def test_the_last_position_alone_matches_the_full_computation(model, pad):
    # Serving runs the last block for the newest event only; it must give the same numbers.
    x = window(batch=5, length=11, seed=3, pad=pad)
    with torch.no_grad():
        full = model(*x.values())
        last = model(*x.values(), last_only=True)
        probs_full = model.item_probs(full, x["items"])
        probs_last = model.item_probs(last, x["items"])
    assert last.hidden.shape == (5, 1, 32)
    assert torch.allclose(last.hidden[:, 0], full.hidden[:, -1], atol=1e-5)
    assert torch.equal(last.memory, full.memory)
    assert torch.allclose(probs_last, probs_full, atol=1e-6)


def test_fully_padded_rows_give_no_nan(model):
    x = window(length=5, pad=5)
    assert torch.isfinite(run(model, x)).all()
    with torch.no_grad():
        outputs = Predictor(model, top_k=10)(*x.values())
    assert all(torch.isfinite(o.float()).all() for o in outputs)


def test_predictor_outputs_follow_the_onnx_interface(model):
    x = window(batch=4, length=8, pad=3)
    with torch.no_grad():
        action, items, scores, purchase, time_to_next, state = Predictor(model, top_k=10)(
            *x.values())
    assert action.shape == (4, 5) and torch.allclose(action.sum(-1), torch.ones(4))
    assert items.shape == scores.shape == (4, 10) and items.dtype == torch.int64
    assert (items >= 3).all(), "reserved indices (pad, no item, unknown) are never predicted"
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert purchase.shape == time_to_next.shape == (4,) and (time_to_next >= 0).all()
    assert ((purchase >= 0) & (purchase <= 1)).all()


def test_top_k_is_capped_by_the_catalogue(model):
    assert Predictor(model, top_k=1000).top_k == 40 - 3


def test_the_attention_window_is_the_longest_that_fits_the_window(model):
    cfg = model.cfg
    assert cfg.attention_window == 6  # 2 blocks x 5 earlier events + the newest = 11 <= 12
    default = ModelConfig.for_encoding(EncodingSpec(), n_items=40, n_categories=9)
    assert default.attention_window == 25  # 2 x 24 + 1 = 49 <= 50


def test_an_event_beyond_the_model_s_reach_changes_no_prediction(model):
    # Two blocks that each read 6 events reach back 2 x 5 events from the newest.
    x = window(batch=2, length=12, seed=5)
    reach = model.cfg.n_layers * (model.cfg.attention_window - 1)
    for position, changes in ((12 - 1 - reach - 1, False), (12 - 1 - reach, True)):
        y = {k: v.clone() for k, v in x.items()}
        y["items"][:, position] = 7
        y["actions"][:, position] = 5
        with torch.no_grad():
            a, b = Predictor(model, 10)(*x.values()), Predictor(model, 10)(*y.values())
        assert torch.allclose(a[0], b[0], atol=1e-6) != changes


def user_events(n, seed):
    g = torch.Generator().manual_seed(seed)
    return {"items": torch.randint(3, 40, (2, n), generator=g),
            "categories": torch.randint(1, 9, (2, n), generator=g),
            "actions": torch.randint(1, 6, (2, n), generator=g),
            "gaps": torch.randint(1, 32, (2, n), generator=g),
            "queries": torch.randint(0, 4096, (2, n, 4), generator=g)}


@pytest.mark.parametrize("fresh", [1, 3])
def test_the_step_predictor_matches_the_whole_window_as_the_window_slides(model, fresh):
    # Serving keeps each user's state and runs only their new events through the network,
    # a few at a time: the same numbers as each event's whole window, event after event,
    # long after the window is full and slides.
    events, length = user_events(40, seed=11), SPEC.max_len
    n_past = model.cfg.attention_window - 1

    def window(start, end, at_least):  # events [start, end), left-padded to at_least
        w = {k: v[:, start:end] for k, v in events.items()}
        missing = at_least - w["actions"].shape[1]
        if missing > 0:
            w = {k: torch.cat([v.new_zeros((2, missing, *v.shape[2:])), v], 1)
                 for k, v in w.items()}
        return list(w.values())

    full, step = Predictor(model, 10), StepPredictor(model, 10)
    with torch.no_grad():
        state = full(*window(0, 1, n_past + 1))[-1]
        for end in range(1 + fresh, 41, fresh):
            first = end - fresh  # the first fresh event's index
            span = window(max(0, first - length + 1), end, n_past + fresh)
            past = torch.zeros((*state.shape[:4], n_past + fresh, state.shape[5]))
            past[:, :, :, :, :n_past] = state
            lengths = torch.tensor([[min(i + 1, length) for i in range(first, end)]] * 2)
            got = step(*span, past, lengths, torch.arange(2 * fresh))
            for i in range(fresh):
                want = full(*window(max(0, first + i + 1 - length), first + i + 1, n_past + 1))
                for o in (0, 2, 3, 4):  # probabilities, top scores, purchase, seconds
                    assert torch.allclose(got[o][i::fresh], want[o], atol=1e-5), (end, i, o)
            assert torch.allclose(got[-1], want[-1], atol=1e-5)  # the state it hands on
            state = got[-1]


def test_a_model_without_an_attention_window_has_no_step_graph():
    cfg = ModelConfig.for_encoding(SPEC, n_items=40, n_categories=9, attention_window=0)
    with pytest.raises(ValueError, match="no step graph"):
        StepPredictor(NextActionModel(cfg), 10)
    with torch.no_grad():  # and its whole-window graph returns no state
        assert len(Predictor(NextActionModel(cfg).eval(), 10)(*window().values())) == 5
