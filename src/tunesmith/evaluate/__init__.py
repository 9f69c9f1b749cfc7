"""Evaluation: strategies on one frozen eval pack, per-example metrics, bootstrap CIs, gate."""
