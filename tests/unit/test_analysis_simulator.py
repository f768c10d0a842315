"""On a simulated shop, the report's funnel rates match the simulator's configured ones.

The simulator draws each next action of a visit from ``funnel.action_weights``:
its configured table ``_AFTER`` adjusted for the item's price, the cart, items
due again and the visit's length. This test simulates a small shop, records
those probabilities just before every draw, and checks that the rates the
report measures from the log alone (``funnel.next_step``) equal their mean
within sampling error (4 standard errors of a sum of Bernoulli draws).

Where the adjustments leave a ratio alone (after a search, a category page or
an add-to-cart, only the chance of leaving grows with the visit's length), the
report must also give the configured table's own ratio.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from model_export.simulator import funnel as sim
from model_export.simulator.catalogue import build_catalogue
from model_export.simulator.engine import Config
from model_export.simulator.shopper import Shopper
from model_export.simulator.writer import event_line
from streams.analysis.analyze import analyze_log
from streams.analysis.funnel import LEAVE
from streams.contracts import ACTIONS

OUTCOMES = (*ACTIONS, LEAVE)  # the simulator's action indices, END last
USERS, ITEMS, DAYS, SEED = 500, 400, 30, 3


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, dict[str, list[list[float]]]]:
    """A simulated log, and the simulator's next-action probabilities by previous action."""
    cat = build_catalogue(ITEMS, SEED)
    cfg = Config(USERS, ITEMS, DAYS, SEED)
    drawn: dict[str, list[list[float]]] = {a: [] for a in ACTIONS}
    rows: list[tuple[int, int, int, bytes]] = []
    for user in range(USERS):
        shopper = Shopper.new(cat, SEED, user, cfg.start_ms, cfg.end_ms)
        position = 0
        while True:
            s = shopper.s
            if s.in_session and s.last_action != sim.END:
                drawn[ACTIONS[s.last_action]].append(sim.action_weights(s, cat))
            event = shopper.step()
            if event is None:
                break
            rows.append((event.ts, user, position, event_line(cat, SEED, user, position, event)))
            position += 1
    rows.sort()  # by time, as `shopcast generate` writes it
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    path.write_bytes(b"".join(row[3] for row in rows))
    return path, drawn


@pytest.fixture(scope="module")
def next_step(simulated) -> dict:
    return analyze_log(simulated[0])["funnel"]["next_step"]


@pytest.mark.parametrize("after", ACTIONS)
def test_next_step_rates_match_the_simulators_probabilities(simulated, next_step, after):
    weights = simulated[1][after]
    measured = next_step[after]
    assert measured["events"] == len(weights)
    n = len(weights)
    for k, outcome in enumerate(OUTCOMES):
        expected = sum(w[k] for w in weights) / n
        se = math.sqrt(sum(w[k] * (1 - w[k]) for w in weights)) / n
        got = measured["next"][outcome]
        assert abs(got - expected) <= 4 * se + 1e-12, (after, outcome, got, expected, se)


@pytest.mark.parametrize(("after", "step"), [("search", "click"), ("browse", "click"),
                                             ("add_to_cart", "purchase")])
def test_configured_step_ratios_when_the_visit_goes_on(next_step, after, step):
    table = sim._AFTER[ACTIONS.index(after)]
    configured = table[ACTIONS.index(step)] / (1.0 - table[sim.END])
    rates, n = next_step[after]["next"], next_step[after]["events"]
    going_on = 1.0 - rates[LEAVE]
    measured = rates[step] / going_on
    se = math.sqrt(configured * (1 - configured) / (n * going_on))
    assert abs(measured - configured) <= 4 * se, (after, step, measured, configured, se)
