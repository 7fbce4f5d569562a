"""Pseudo-label refinement of coarse masks: project folders, the hybrid rules, model passes and rounds."""
