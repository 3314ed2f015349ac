"""The A/B test harness behind ``tlrec ab`` (the pure pieces the API shares live in ``serving.experiments``).

events.py      read exposures / outcomes / pre-period files (validated, one-line DataError)
assignment.py  ``tlrec ab assign``: the variant of every listed user
metrics.py     per-user metrics: outcomes at/after each user's first exposure
stats.py       Welch intervals, SRM chi-square, CUPED, mSPRT, team-draft interleaving (vectorised)
analysis.py    per-variant summaries, effects against control, SRM, CUPED, sequential p-values
report.py      rich tables, Markdown report, PNG plots
replay.py      offline replay of artifacts on logged interactions (split test + interleaving)
"""
