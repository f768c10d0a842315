"""A simulated online shop that writes realistic Event v1 logs, and knows its own odds.

Modules, one concept each:

* :mod:`~model_export.simulator.shop_words` -- departments and their vocabulary
* :mod:`~model_export.simulator.catalogue` -- items, popularity, co-view and co-purchase
* :mod:`~model_export.simulator.users` -- activity, daily rhythm, drifting tastes
* :mod:`~model_export.simulator.funnel` -- the visit's funnel as explicit distributions
* :mod:`~model_export.simulator.queries` -- search text with typos and word order
* :mod:`~model_export.simulator.shopper` -- one user drawing events
* :mod:`~model_export.simulator.oracle` -- the best possible prediction, and its file format
* :mod:`~model_export.simulator.writer` -- JSON Lines output
* :mod:`~model_export.simulator.engine` -- all users, in parallel, merged by time

``simulate(users, items, days, seed)`` is the plain-Python entry point.
"""

from model_export.simulator.engine import END_MS, Config, Simulation, run, simulate

__all__ = ["END_MS", "Config", "Simulation", "run", "simulate"]
