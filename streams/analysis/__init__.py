"""Behaviour analysis of an event log: what users do, not only what they will do next.

One streaming pass over the log (:func:`analyze_log`) cuts events into visits
(:mod:`.visits`) and hands each finished visit to the figures: the funnel
(:mod:`.funnel`), visits and returns (:mod:`.sessions`), search
(:mod:`.search`), category moves and baskets (:mod:`.affinity`) and revenue
(:mod:`.revenue`). :mod:`.report` draws the charts and writes the HTML page.
"""
