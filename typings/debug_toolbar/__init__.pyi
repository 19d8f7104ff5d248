# django-debug-toolbar ships py.typed, but its Panel API is unannotated: these stubs
# type the names dynroute.contrib.debug_toolbar uses, and only those.
