"""Inference workers: wafer-complete events in, segmented wafers out."""
