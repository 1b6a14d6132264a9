"""Deployments, model groups and the strategies that choose among them."""
