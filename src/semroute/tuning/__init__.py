"""Offline work on labelled data: building indexes, evaluation, calibration, import."""
