"""Matching: per-frame evidence against the index, geometric verification, the video's score and verdict, the match policy, the result records."""
