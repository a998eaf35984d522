"""Side-by-side measurements of docstatus and its floors (``make bench``)."""
