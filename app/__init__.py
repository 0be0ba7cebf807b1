"""The Streamlit side of CARLoS: everything the pages share, one module per concern.

``resources`` (cached store, views, services), ``access`` (login -> the acting user),
``state`` (URL state, flash messages, the last search), ``navigation`` (the page list and the
setup every page runs first), ``thresholds`` (the threshold sidebar), ``widgets`` (tables,
panels, image pairs), ``text`` (creator text made inert for Markdown) and ``worker`` (the
in-process characterization thread). The only package besides ``pages/`` that imports
streamlit; ``carlos/`` never does.
"""
