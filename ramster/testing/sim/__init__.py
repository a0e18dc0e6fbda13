"""A deterministic simulation of whole ramster clusters (see run.py); a seed replays a run."""

from ramster.testing.sim.run import Outcome, run_seed

__all__ = ["Outcome", "run_seed"]
