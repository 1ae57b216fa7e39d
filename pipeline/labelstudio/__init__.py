"""The Label Studio services (docs/DESIGN.md §7): ``client`` (SDK calls: project, send tasks, pull), ``server`` (a
local server process), ``oracle`` (the simulated annotator). The formats they exchange, pure and server-free, are
``pipeline.data.labelstudio``. Importing this package imports neither the SDK nor the server; ``client`` and
``oracle`` need ``label_studio_sdk``.
"""
