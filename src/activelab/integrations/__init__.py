"""Adapters that let other active-learning libraries use activelab's strategies.

Each adapter lives in its own module and is imported on demand, so using one never imports another
library's dependencies: :mod:`activelab.integrations.modal` turns a registered strategy into a modAL
query strategy.
"""
