"""Capture: how committed writes become ``Change`` objects for the delivery backends.

Signal mode (the default, ``signals.py``) listens to Django: ``post_save``/``post_delete`` of
the registered models, their proxies, multi-table children and historical (migration) models,
and the deletion collector's ``SET_NULL``/``SET_DEFAULT``/``SET()`` updates. The registry pushes
its declarations down into a ``Table`` (``table.py``); nothing here calls back up into it.
"""
