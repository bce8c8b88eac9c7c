"""One module or package per optimization; the registry (``optimizer_tool.registry``) finds them.

A rule module never imports another rule module: knowledge two optimizations share lives in
``optimizer_tool.knowledge``, edit helpers in ``optimizer_tool.edit``.
"""
