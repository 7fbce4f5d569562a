"""The HTML report of a run directory: what it reads (inputs), how it renders (html), and the page (build)."""
