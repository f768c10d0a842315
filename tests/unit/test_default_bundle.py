"""The committed default bundle loads, matches today's encoding and scores real windows."""

import numpy as np

from streams.bundle import load_bundle
from streams.contracts import Event
from streams.encoding import Encoder, EncodingSpec
from streams.scorer import Scorer
from streams.settings import DEFAULT_BUNDLE, Settings
from streams.window import encode_history


def test_default_bundle_loads_and_matches_the_current_encoding():
    bundle = load_bundle(DEFAULT_BUNDLE)
    # Same encoding parameters as this code's defaults; the worker scores the bundle's
    # window length unless told otherwise.
    assert bundle.spec == EncodingSpec()
    assert bundle.spec.max_len == 50
    assert Settings.model_fields["window_length"].default is None
    assert bundle.manifest["window_ttl_seconds"] == Settings.model_fields[
        "window_ttl_seconds"].default
    assert bundle.top_k >= Settings.model_fields["top_k"].default
    assert (DEFAULT_BUNDLE / "README.md").is_file(), "the README records how it was made"
    assert bundle.manifest["metrics"]["model"]["ndcg@10"] > 0


def test_default_bundle_scores_windows_encoded_by_todays_encoder():
    bundle = load_bundle(DEFAULT_BUNDLE)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    item = bundle.items.tokens[0]
    events = [Event(f"e{i}", "u-1", kind, 1_764_000_000_000 + i * 20_000, item_id=item)
              for i, kind in enumerate(["click", "click", "add_to_cart"])]
    (window,) = encode_history(events, encoder, ttl_ms=bundle.horizon_seconds * 1000)
    scores = Scorer(bundle, top_k=10).score([window, window[-1:]])
    assert scores.next_action.shape == (2, 5)
    assert np.allclose(scores.next_action.sum(axis=1), 1.0, atol=1e-5)
    assert (scores.top_items >= 3).all() and scores.top_items.shape[0] == 2
