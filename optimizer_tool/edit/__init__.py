"""The edit layer of the fixes: ``tree`` (where a node sits), ``edits`` (the one accumulator and
transformer), ``templates`` (code and literals in the file's own style), ``settings`` (writing
the trainer's settings). Syntax only: what the code means comes from ``optimizer_tool.knowledge``."""
