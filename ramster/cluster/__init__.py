"""Cluster logic: placement now; discovery, membership and the coordinator arrive with issue 5."""

from ramster.cluster.placement import Candidate, choose_holders

__all__ = ["Candidate", "choose_holders"]
