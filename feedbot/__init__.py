"""feedbot: follow researchers, blogs and arXiv; rank what they publish for your roadmap stage."""

__version__ = "0.1.0"
