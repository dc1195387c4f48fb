"""normexp: reproduce, extend and stress-test the published claims about normalization in deep networks."""

__version__ = "0.1.0"
