"""The Label Studio hand-off (docs/DESIGN.md §7): labeling config, task <-> annotation conversion, client, local server,
simulated annotator. File formats between stages: docs/contracts/labelstudio.md.

Modules: ``config`` (labeling config XML), ``coordinates`` (percent <-> pixels), ``tasks`` (instances -> tasks,
pure), ``annotations`` (annotations -> corrections, pure), ``client`` (SDK calls: project, export, pull),
``server`` (a local server process), ``oracle`` (the simulated annotator). Importing this package imports neither
the SDK nor the server; ``client`` and ``oracle`` need ``label_studio_sdk``.
"""
