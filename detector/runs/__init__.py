"""Runs: batch scans (engines, resume, export, report), retroactive rescans, flood watch, evaluation, the demo."""
