"""Report rendering: Markdown, self-contained HTML and the Pareto plot of a search."""
from .render import pareto_front, pareto_plot, search_markdown, write_html, write_markdown

__all__ = ["pareto_front", "pareto_plot", "search_markdown", "write_html", "write_markdown"]
