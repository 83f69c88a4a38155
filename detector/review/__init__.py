"""Review: reviewers' decisions read and applied (allow-list, confirmed references)."""
