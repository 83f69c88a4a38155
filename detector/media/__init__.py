"""Media: decoding a file into sampled frames (frames), the region grid (regions), the limits and hostile-input guards (limits, hostile), synthetic media for the demo and tests (synth)."""
