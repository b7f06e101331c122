"""Pruning, before export (torch, run folders): importance → pruner → step → count, then fine-tuning."""
