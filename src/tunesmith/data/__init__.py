"""Data preparation: raw files -> Examples -> a clean, leak-free dataset snapshot."""
